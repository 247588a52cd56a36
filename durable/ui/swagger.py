"""The Swagger UI page of the API, self-contained.

aws-lambda-powertools ships Swagger UI's JavaScript and CSS; they are inlined
into one HTML page with the OpenAPI document, so the page needs nothing from a
CDN. Read once per process (about 1.7 MB).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

__all__ = ["swagger_page"]

_ASSETS = "aws_lambda_powertools.event_handler.openapi.swagger_ui"


@functools.cache
def _assets() -> tuple[str, str]:
    files = resources.files(_ASSETS)
    js = files.joinpath("swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    css = files.joinpath("swagger-ui.min.css").read_text(encoding="utf-8")
    return js, css


def swagger_page(openapi_json: str, base_path: str) -> str:
    """The page for the OpenAPI document ``openapi_json``, its requests going to ``base_path``."""
    spec = json.loads(openapi_json)
    spec["servers"] = [{"url": base_path}]
    # "</" escaped so that no string in the document can close the page's <script>.
    escaped = json.dumps(spec, indent=2).replace("</", "<\\/")
    js, css = _assets()
    return generate_swagger_html(escaped, js, css, "", None, False)
