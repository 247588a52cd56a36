"""``durable serve``: the HTTP API of :mod:`durable.api` on a real HTTP server, with a worker.

Each request becomes an API Gateway REST proxy event for the very resolver
the Lambda serves, so local and AWS answers are the same. A
:class:`~durable.runtime.local.Runtime` steps instances on the same store in
the same process. The server binds loopback unless told otherwise; with a
token, every request needs ``Authorization: Bearer TOKEN``, except the files
of the status page (``GET /`` and ``/ui/...``: no data in them), whose script
asks for the token and sends it with its API calls.

The resolver keeps the current request on itself, so every request gets its
own (cheap to build) resolver: long-polls and other requests run side by side.
"""

from __future__ import annotations

import base64
import hmac
import json
import signal
import sys
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from durable.api import MAX_BODY_BYTES, Backend, build_api
from durable.history import utcnow
from durable.runtime.local import Runtime
from durable.store.base import HistoryStore
from durable.workflow import Workflow

__all__ = ["make_server", "proxy_event", "serve"]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def proxy_event(
    method: str, target: str, headers: dict[str, str], body: bytes | None, request_id: str
) -> dict[str, Any]:
    """The API Gateway REST proxy event for one HTTP request (``target``: path and query)."""
    parts = urlsplit(target)
    multi = parse_qs(parts.query, keep_blank_values=True)
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    path = parts.path or "/"
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": path,
            "requestId": request_id,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def make_server(
    store: HistoryStore,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ThreadingHTTPServer:
    """An HTTP server answering with the API on ``store`` (call ``serve_forever``)."""

    def new_app() -> APIGatewayRestResolver:
        return build_api(lambda: Backend(store=store, now=utcnow))

    class Handler(BaseHTTPRequestHandler):
        server_version = "durable"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            if log is not None:
                log(f"{self.address_string()} {format % args}")

        def _send(self, status: int, body: str, headers: dict[str, str]) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, extra: dict[str, str]) -> None:
            body = json.dumps({"error": code, "message": message, "field": None})
            self._send(status, body, {"Content-Type": "application/json", **extra})

        def _handle(self) -> None:
            if token is not None and not _is_page_file(self.command, self.path):
                given = self.headers.get("Authorization", "")
                expected = f"Bearer {token}"
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    self.close_connection = True
                    self._error(
                        401,
                        "unauthorized",
                        "this server needs Authorization: Bearer TOKEN",
                        {"WWW-Authenticate": "Bearer"},
                    )
                    return
            length_text = self.headers.get("Content-Length") or "0"
            try:
                length = int(length_text)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._error(400, "malformed_request", "bad Content-Length", {})
                return
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the body is left unread
                self._error(
                    413, "payload_too_large", f"the request body is over {MAX_BODY_BYTES} bytes", {}
                )
                return
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items()}
            event = proxy_event(self.command, self.path, headers, body, uuid.uuid4().hex)
            result = new_app().resolve(event, cast(LambdaContext, None))
            out: dict[str, str] = {}
            for name, values in (result.get("multiValueHeaders") or {}).items():
                out[name] = ", ".join(str(v) for v in values)
            for name, value in (result.get("headers") or {}).items():
                out[name] = str(value)
            self._send(int(result["statusCode"]), str(result.get("body") or ""), out)

        def do_GET(self) -> None:
            self._handle()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(
    store: HistoryStore,
    workflows: tuple[Workflow[Any, Any], ...],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
) -> None:
    """Serve the API and run a worker on ``store`` until Ctrl-C or SIGTERM.

    Prints ``listening on http://HOST:PORT`` to stderr once requests are
    answered (with ``port`` 0, the port the system picked).
    """
    server = make_server(store, host, port, token=token, log=_stderr)
    runtime = Runtime(store, workflows=workflows)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    try:
        _stderr(f"durable serve: listening on http://{shown}:{bound_port}")
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        _stderr("durable serve: stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        runtime.close()


def _is_page_file(method: str, target: str) -> bool:
    path = urlsplit(target).path
    name = path[len("/ui/") :] if path.startswith("/ui/") else None
    is_file = name is not None and "/" not in name and "%" not in name and not name.startswith(".")
    return method in ("GET", "HEAD") and (path == "/" or is_file)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
