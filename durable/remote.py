"""A client of the HTTP API, for the CLI's ``--endpoint``.

Plain HTTP (with an optional bearer token) for ``durable serve``; requests
signed with SigV4 (service ``execute-api``, the default botocore credentials)
for a deployed stack, recognised by a host ending in ``amazonaws.com``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from durable.errors import DurableError

__all__ = ["RemoteApi", "RemoteError", "quote_segment", "signed_headers"]

_TIMEOUT_MARGIN = 30.0


class RemoteError(DurableError):
    """The API refused a request (``status``, ``code``) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def quote_segment(text: str) -> str:
    """``text`` as one path segment."""
    return quote(text, safe="")


class RemoteApi:
    """Calls to the API at ``endpoint`` (e.g. ``http://127.0.0.1:8000`` or the stage URL)."""

    def __init__(self, endpoint: str, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RemoteError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.sigv4 = (parts.hostname or "").endswith("amazonaws.com")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        *,
        wait: float = 0.0,
    ) -> Any:
        """The JSON answer of a 2xx; :class:`RemoteError` with the API's message otherwise."""
        url = self.endpoint + path
        if query:
            url += "?" + urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.sigv4:
            headers = signed_headers(method, url, data, headers)
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout + wait) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = None
            if isinstance(detail, dict):
                message = str(detail.get("message") or detail.get("error") or detail)
                if detail.get("request_id"):
                    message += f" (request id {detail['request_id']})"
                code = str(detail.get("error") or "")
            else:
                message, code = raw.decode("utf-8", "replace")[:200] or exc.reason, ""
            raise RemoteError(f"{exc.code}: {message}", exc.code, code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach {self.endpoint}: {reason}") from None
        except ValueError:
            raise RemoteError(f"{self.endpoint} did not answer with JSON") from None


def signed_headers(
    method: str, url: str, data: bytes | None, headers: dict[str, str]
) -> dict[str, str]:
    """``headers`` plus the SigV4 signature of the request (service ``execute-api``)."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:
        raise RemoteError("no AWS credentials found to sign the request (see `aws configure`)")
    host = urlsplit(url).hostname or ""
    region = session.get_config_variable("region")
    labels = host.split(".")
    if len(labels) >= 5 and labels[1] == "execute-api":
        region = labels[2]  # <api-id>.execute-api.<region>.amazonaws.com
    if not region:
        raise RemoteError("no AWS region to sign the request for (set AWS_REGION)")
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return {str(k): str(v) for k, v in request.headers.items()}
