"""The HTTP API: one aws-lambda-powertools resolver, served by Lambda on AWS and by ``durable serve``.

:func:`build_api` builds the app from a :class:`Backend` (store, extra
workflows, clock) and an optional ``on_start`` callback (on AWS: start the
Step Functions loop of the new instance). Routes::

    GET    /workflows                         registered workflows, JSON schema of their input
    POST   /workflows/{name}                  start: {"input": ..., "instance_id": ...} -> 202
    GET    /instances?status=&workflow=&limit=
    GET    /instances/{id}?wait=SECONDS       status; long-polls until the instance ends
    GET    /instances/{id}/history?after=SEQ&limit=N&run=R
    POST   /instances/{id}/events/{name}      body: the event data (JSON)
    POST   /instances/{id}/cancel             body (optional): {"reason": ...}
    POST   /instances/{id}/terminate          body (optional): {"reason": ...}
    DELETE /instances/{id}
    GET    /openapi.json
    GET    /swagger                            Swagger UI (inlined: works offline)
    GET    /                                  the status page (durable/ui), and its files under /ui/

Every rejected request gets ``{"error": CODE, "message": ..., "field": ...}``
(400 ``malformed_json``, 404 ``not_found``, 409 ``conflict``/``finished``,
413 ``payload_too_large``, 422 ``invalid``) and changes nothing stored. An
unexpected failure is logged with the request id and answered with
``500 {"error": "internal", "request_id": ...}``, never with a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from pydantic import TypeAdapter, ValidationError

from durable.codec import encode
from durable.errors import InstanceExistsError, InstanceNotFoundError, SerializationError
from durable.history import CancelMessage, EventMessage, Message, Status, TerminateMessage
from durable.runtime.start import check_instance_id, check_text, create_instance, encode_input
from durable.store.base import HistoryStore
from durable.ui import Asset, asset, page
from durable.ui.swagger import swagger_page
from durable.workflow import Workflow, registered_workflows

__all__ = ["MAX_BODY_BYTES", "ApiError", "Backend", "build_api"]

log = logging.getLogger("durable.api")

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted (413 above)."""
MAX_WAIT_SECONDS = 60.0
"""Longest long-poll of ``GET /instances/{id}?wait=``."""
MAX_PAGE = 1000
"""Largest ``limit`` of history pages and instance lists."""
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class Backend:
    """What the API works on: a store, workflows beyond the registry, and the time."""

    store: HistoryStore
    now: Callable[[], datetime]
    workflows: Mapping[str, Workflow[Any, Any]] = field(default_factory=dict)

    def all_workflows(self) -> dict[str, Workflow[Any, Any]]:
        found = registered_workflows()
        found.update(self.workflows)
        return found


class ApiError(Exception):
    """A rejected request: status, machine-readable code, message, and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


OnStart = Callable[[str, bool], None]
"""Called after a start with the instance id and whether it was created now."""


def build_api(
    backend: Callable[[], Backend],
    *,
    on_start: OnStart | None = None,
    max_wait: float = MAX_WAIT_SECONDS,
    poll_interval: float = 0.2,
) -> APIGatewayRestResolver:
    """The API as a resolver: ``app.resolve(proxy_event, context)`` answers one request.

    ``backend`` is called once per request (a Lambda container builds its
    services lazily). ``max_wait`` caps long-polls (keep it under API
    Gateway's 29 s on AWS).
    """
    app = APIGatewayRestResolver()

    def respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
        return Response(
            status_code=status,
            content_type="application/json",
            body=json.dumps(body, ensure_ascii=False),
            headers=headers,
        )

    def request_id() -> str:
        ctx = app.current_event.raw_event.get("requestContext") or {}
        rid = ctx.get("requestId")
        return rid if isinstance(rid, str) and rid else uuid.uuid4().hex

    def on_api_error(exc: ApiError) -> Response[str]:
        return respond(exc.status, {"error": exc.code, "message": exc.message, "field": exc.field})

    def on_no_route(exc: NotFoundError) -> Response[str]:
        event = app.current_event
        message = f"no route {event.http_method} {event.path}"
        return respond(404, {"error": "not_found", "message": message, "field": None})

    def on_internal(exc: Exception) -> Response[str]:
        rid = request_id()
        log.exception("request %s failed", rid)
        return respond(500, {"error": "internal", "message": "internal error", "request_id": rid})

    app.exception_handler(ApiError)(on_api_error)
    app.exception_handler(NotFoundError)(on_no_route)
    app.exception_handler(Exception)(on_internal)

    # ------------------------------------------------------------------ request helpers

    def raw_body() -> str | None:
        event = app.current_event
        raw = event.body
        if raw is None or raw == "":
            return None
        if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
            raise too_large()
        if event.is_base64_encoded:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "malformed_json", "the body is not valid base64") from None
        else:
            data = raw.encode("utf-8", "surrogatepass")
        if len(data) > MAX_BODY_BYTES:
            raise too_large()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "malformed_json", "the body is not UTF-8 text") from None

    def too_large() -> ApiError:
        return ApiError(
            413, "payload_too_large", f"the request body is over {MAX_BODY_BYTES} bytes"
        )

    def json_body() -> tuple[bool, Any]:
        text = raw_body()
        if text is None:
            return False, None
        try:
            value = json.loads(text, object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
        return True, value

    def object_body(allowed: tuple[str, ...]) -> dict[str, Any]:
        present, value = json_body()
        if not present:
            return {}
        if not isinstance(value, dict):
            raise ApiError(422, "invalid", "the body must be a JSON object", None)
        for key in value:
            if key not in allowed:
                raise ApiError(
                    422, "invalid", f"unknown field {key!r} (allowed: {', '.join(allowed)})", key
                )
        return value

    def query(name: str) -> str | None:
        event = app.current_event
        repeated = (event.multi_value_query_string_parameters or {}).get(name)
        if isinstance(repeated, list) and len(repeated) > 1:
            raise ApiError(
                422, "invalid", f"{name} is given {len(repeated)} times; give it once", name
            )
        params = event.query_string_parameters or {}
        value = params.get(name)
        return value if isinstance(value, str) else None

    def number(name: str, default: float, low: float, high: float) -> float:
        text = query(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (low <= value <= high):
            raise ApiError(
                422, "invalid", f"{name} must be a number from {low:g} to {high:g}", name
            )
        return value

    def integer(name: str, default: int, low: int, high: int) -> int:
        text = query(name)
        if text is None:
            return default
        match = _INTEGER.fullmatch(text)
        if match is None:
            raise ApiError(422, "invalid", f"{name} must be an integer", name)
        # More digits than any bound has: out of range (int() refuses over 4,300 digits).
        value = int(text) if len(match.group(1)) <= 20 else high + 1
        if not (low <= value <= high):
            raise ApiError(422, "invalid", f"{name} must be from {low} to {high}", name)
        return value

    def path_text(value: str, what: str) -> str:
        text = unquote(value)
        try:
            return check_text(text, what)
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc), what.replace(" ", "_")) from None

    def instance_path(value: str) -> str:
        iid = path_text(value, "instance id")
        try:
            return check_instance_id(iid)
        except ValueError as exc:
            raise ApiError(404, "not_found", str(exc), "instance_id") from None

    def base_url() -> str:
        ctx = app.current_event.raw_event.get("requestContext") or {}
        domain, stage = ctx.get("domainName"), ctx.get("stage")
        if not isinstance(domain, str) or not isinstance(stage, str):
            return ""
        return f"https://{domain}/{stage}" if domain and stage else ""

    def stage_prefix() -> str:
        """``/STAGE`` when API Gateway put the stage in front of the path, else ``""``."""
        ctx = app.current_event.raw_event.get("requestContext") or {}
        stage, path = ctx.get("stage"), ctx.get("path")
        if not isinstance(stage, str) or not stage or stage == "$default":
            return ""
        return f"/{stage}" if isinstance(path, str) and path.startswith(f"/{stage}/") else ""

    def links(iid: str) -> dict[str, str]:
        root = f"{base_url()}/instances/{quote(iid, safe='')}"
        return {
            "status_url": root,
            "event_url": f"{root}/events/{{name}}",
            "cancel_url": f"{root}/cancel",
            "terminate_url": f"{root}/terminate",
            "history_url": f"{root}/history",
        }

    def not_found(iid: str) -> ApiError:
        return ApiError(404, "not_found", f"no workflow instance with id {iid!r}", "instance_id")

    # ------------------------------------------------------------------ workflows

    @app.get("/workflows")
    def list_workflows() -> Response[str]:
        found = []
        for name, wf in sorted(backend().all_workflows().items()):
            found.append(
                {
                    "name": name,
                    "takes_input": wf.takes_input,
                    "input_schema": _schema(wf.input_type) if wf.takes_input else None,
                    "start_url": f"{base_url()}/workflows/{quote(name, safe='')}",
                }
            )
        return respond(200, {"workflows": found})

    @app.post("/workflows/<name>")
    def start(name: str) -> Response[str]:
        be = backend()
        wf_name = path_text(name, "workflow name")
        body = object_body(("input", "instance_id"))
        workflow = be.all_workflows().get(wf_name)
        if workflow is None:
            raise ApiError(404, "not_found", f"no workflow registered as {wf_name!r}", "name")
        instance_id = body.get("instance_id")
        if instance_id is not None:
            if not isinstance(instance_id, str):
                raise ApiError(422, "invalid", "instance_id must be a string", "instance_id")
            try:
                check_instance_id(instance_id)
            except ValueError as exc:
                raise ApiError(422, "invalid", str(exc), "instance_id") from None
        value = body.get("input")
        _check_unicode(value, "input")
        _check_input(workflow, value)
        try:
            payload = encode_input(workflow, value)
        except SerializationError as exc:
            raise ApiError(422, "invalid", str(exc), "input") from None
        try:
            iid, created = create_instance(be.store, workflow, payload, instance_id, be.now())
        except InstanceExistsError as exc:
            raise ApiError(409, "conflict", str(exc), "instance_id") from None
        if on_start is not None:
            on_start(iid, created)
        urls = links(iid)
        return respond(
            202,
            {"instance_id": iid, "created": created, **urls},
            {"Location": urls["status_url"], "Retry-After": "1"},
        )

    # ------------------------------------------------------------------ instances

    @app.get("/instances")
    def list_instances() -> Response[str]:
        status_text = query("status")
        wanted: list[Status] | None = None
        if status_text:
            try:
                wanted = [Status(s.strip().upper()) for s in status_text.split(",")]
            except ValueError:
                choices = ", ".join(s.value for s in Status)
                raise ApiError(
                    422, "invalid", f"status must be among {choices}", "status"
                ) from None
        workflow = query("workflow") or None
        if workflow is not None:
            try:
                check_text(workflow, "workflow")
            except ValueError as exc:
                raise ApiError(422, "invalid", str(exc), "workflow") from None
        limit = integer("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        found = backend().store.list_instances(status=wanted, workflow=workflow, limit=limit)
        return respond(200, {"instances": [h.model_dump(mode="json") for h in found]})

    @app.get("/instances/<instance_id>")
    def status(instance_id: str) -> Response[str]:
        iid = instance_path(instance_id)
        wait = number("wait", 0.0, 0.0, max_wait)
        store = backend().store
        deadline = time.monotonic() + wait
        header = store.get(iid)
        if header is None:
            raise not_found(iid)
        while not header.status.is_terminal and time.monotonic() < deadline:
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
            header = store.get(iid)
            if header is None:
                raise not_found(iid)
        return respond(200, {**header.model_dump(mode="json"), **links(iid)})

    @app.get("/instances/<instance_id>/history")
    def history(instance_id: str) -> Response[str]:
        iid = instance_path(instance_id)
        after = integer("after", 0, 0, 2**62)
        limit = integer("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        store = backend().store
        header = store.get(iid)
        if header is None:
            raise not_found(iid)
        run = integer("run", header.run, 1, header.run)
        try:
            events = store.history(iid, run=run)
        except InstanceNotFoundError:
            raise not_found(iid) from None
        page = [e for e in events if e.seq > after][: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        next_url = None
        if more:
            next_url = (
                f"{base_url()}/instances/{quote(iid, safe='')}/history"
                f"?run={run}&after={page[-1].seq}&limit={limit}"
            )
        return respond(
            200,
            {
                "instance_id": iid,
                "run": run,
                "events": [e.model_dump(mode="json") for e in page],
                "next": next_url,
            },
        )

    def post(iid: str, message: Message, what: str) -> None:
        try:
            accepted = backend().store.post(iid, message)
        except InstanceNotFoundError:
            raise not_found(iid) from None
        if not accepted:
            raise ApiError(409, "finished", f"instance {iid!r} has already ended; {what} refused")

    @app.post("/instances/<instance_id>/events/<event_name>")
    def raise_event(instance_id: str, event_name: str) -> Response[str]:
        iid = instance_path(instance_id)
        name = path_text(event_name, "event name")
        _, data = json_body()
        _check_unicode(data, "body")
        try:
            payload = encode(data, what=f"data of event {name!r}")
        except SerializationError as exc:
            raise ApiError(422, "invalid", str(exc), "body") from None
        be = backend()
        if be.store.get(iid) is None:
            raise not_found(iid)
        post(iid, EventMessage(event=name, data=payload, received_at=be.now()), "event")
        return respond(202, {"instance_id": iid, "event": name, **links(iid)})

    def reason() -> str:
        text = object_body(("reason",)).get("reason", "")
        if not isinstance(text, str):
            raise ApiError(422, "invalid", "reason must be a string", "reason")
        try:
            return check_text(text, "reason")
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc), "reason") from None

    @app.post("/instances/<instance_id>/cancel")
    def cancel(instance_id: str) -> Response[str]:
        iid = instance_path(instance_id)
        why = reason()
        post(iid, CancelMessage(reason=why, received_at=backend().now()), "cancel")
        return respond(202, {"instance_id": iid, "requested": "cancel", **links(iid)})

    @app.post("/instances/<instance_id>/terminate")
    def terminate(instance_id: str) -> Response[str]:
        iid = instance_path(instance_id)
        why = reason()
        post(iid, TerminateMessage(reason=why, received_at=backend().now()), "terminate")
        return respond(202, {"instance_id": iid, "requested": "terminate", **links(iid)})

    @app.delete("/instances/<instance_id>")
    def delete(instance_id: str) -> Response[str]:
        iid = instance_path(instance_id)
        if not backend().store.delete(iid):
            raise not_found(iid)
        return respond(200, {"instance_id": iid, "deleted": True})

    @app.get("/openapi.json")
    def openapi() -> Response[str]:
        schema = app.get_openapi_json_schema(title="durable", version="1")
        return Response(status_code=200, content_type="application/json", body=schema)

    @app.get("/swagger", include_in_schema=False)
    def swagger() -> Response[str]:
        schema = app.get_openapi_json_schema(title="durable", version="1")
        if app.current_event.get_query_string_value("format") == "json":  # the page's own link
            return Response(status_code=200, content_type="application/json", body=schema)
        return Response(
            status_code=200,
            content_type="text/html; charset=utf-8",
            body=swagger_page(schema, stage_prefix() or "/"),
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    # ------------------------------------------------------------------ status page

    def static(found: Asset) -> Response[str]:
        return Response(
            status_code=200,
            content_type=found.content_type,
            body=found.body,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/", include_in_schema=False)
    def status_page() -> Response[str]:
        return static(page())

    @app.get("/ui/<name>", include_in_schema=False)
    def status_page_file(name: str) -> Response[str]:
        found = asset(unquote(name))
        if found is None:
            raise ApiError(
                404, "not_found", f"no file {unquote(name)!r} in the status page", "name"
            )
        return static(found)

    return app


_INTEGER = re.compile(r"\s*-?0*([0-9]+)\s*", re.ASCII)
"""A query parameter that is an integer: ASCII digits, an optional minus, blanks around."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (a repeated key is ambiguous: refused)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _check_unicode(value: Any, field_name: str) -> None:
    """422 if ``value`` holds a lone surrogate (JSON can spell one, ``"\\ud800"``; no
    store can keep it, as it is not valid Unicode text)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f"\\u{ord(exc.object[exc.start]):04x}"
        raise ApiError(
            422,
            "invalid",
            f"{field_name} is not valid Unicode text: it holds a lone surrogate ({where})",
            field_name,
        ) from None
    except (ValueError, RecursionError):
        pass  # encode() names what else is wrong


def _schema(input_type: Any) -> dict[str, Any] | None:
    if input_type is None:
        return {}
    try:
        schema: dict[str, Any] = TypeAdapter(input_type).json_schema()
    except Exception:  # a type pydantic cannot describe: no schema, still startable
        return None
    return schema


def _check_input(workflow: Workflow[Any, Any], value: Any) -> None:
    """422 naming the first field of ``value`` that does not fit the workflow's input type."""
    if not workflow.takes_input or workflow.input_type is None:
        return
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(workflow.input_type)
    except Exception:  # no adapter for this type: encode_input's own check applies
        return
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        field_name = f"input.{where}" if where else "input"
        raise ApiError(422, "invalid", f"{field_name}: {first['msg']}", field_name) from None
