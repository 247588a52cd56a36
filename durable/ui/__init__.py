"""The status page: static HTML, CSS, JavaScript and SVG shipped in the package.

No build step and nothing loaded from elsewhere (no CDN, no web fonts): the
page works offline and on an AWS account that reaches nothing outside. The
API serves ``GET /`` (the page) and ``GET /ui/{file}`` (its assets); every URL
the page uses is relative, so it also works under an API Gateway stage such
as ``/prod/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["Asset", "asset", "page"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One file of the page: its text and content type."""

    body: str
    content_type: str


def asset(name: str) -> Asset | None:
    """The asset called ``name`` (a bare file name in this package), or None."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    dot = name.rfind(".")
    content_type = _TYPES.get(name[dot:]) if dot > 0 else None
    if content_type is None:
        return None
    found = resources.files(__name__).joinpath(name)
    if not found.is_file():
        return None
    return Asset(found.read_text(encoding="utf-8"), content_type)


def page() -> Asset:
    """The page itself (``index.html``)."""
    found = asset("index.html")
    assert found is not None, "durable/ui/index.html is missing from the package"
    return found
