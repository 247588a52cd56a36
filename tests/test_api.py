"""The HTTP API (durable/api.py), called as API Gateway's REST proxy integration would call it.

Every test builds the one resolver of :func:`durable.api.build_api` on a fresh
store; where instances must move, a local :class:`~durable.Runtime` works on
that same store, as ``durable serve`` does.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from durable import Context, MemoryStore, Runtime, SQLiteStore, Status, activity, workflow
from durable.api import MAX_BODY_BYTES, Backend, build_api
from durable.history import utcnow
from durable.store.base import HistoryStore


class Person(BaseModel):
    name: str
    age: int


@workflow(name="api_greet")
def api_greet(ctx: Context, person: Person) -> Generator[Any, Any, str]:
    ctx.set_status("greeting")
    yield from ()
    return f"hello {person.name}, {person.age}"


@workflow(name="api_wait")
def api_wait(ctx: Context, label: str) -> Generator[Any, Any, dict[str, Any]]:
    ctx.set_status("waiting for go")
    data = yield ctx.wait_for_event("go")
    return {"label": label, "data": data}


@activity
def api_echo(i: int) -> int:
    return i


@workflow(name="api_steps")
def api_steps(ctx: Context, n: int) -> Generator[Any, Any, int]:
    total = 0
    for i in range(n):
        total += yield from ctx.call(api_echo, i, name=f"step {i}")
    return total


# ----------------------------------------------------------------------------- plumbing


class Api:
    """The resolver plus a way to call it with synthesized proxy events."""

    def __init__(self, store: HistoryStore, *, max_wait: float = 60.0) -> None:
        self.store = store
        self.app = build_api(
            lambda: Backend(store=store, now=utcnow), max_wait=max_wait, poll_interval=0.02
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | None = None,
        query: dict[str, str] | None = None,
        base64_body: bool = False,
    ) -> tuple[int, dict[str, str], Any]:
        text = raw if raw is not None else (None if body is None else json.dumps(body))
        if text is not None and base64_body:
            text = base64.b64encode(text.encode()).decode()
        result = self.app.resolve(proxy_event(method, path, text, query, base64_body), {})
        headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        for k, values in (result.get("multiValueHeaders") or {}).items():
            headers.setdefault(k.lower(), values[0])
        return int(result["statusCode"]), headers, json.loads(result["body"])

    def get(self, path: str, **query: str) -> tuple[int, Any]:
        code, _, body = self.call("GET", path, query=query or None)
        return code, body


def proxy_event(
    method: str,
    path: str,
    body: str | None,
    query: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": ({k: [v] for k, v in query.items()} if query else None),
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": path,
            "requestId": "req-1",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": base64_body,
    }


def snapshot(store: HistoryStore) -> list[Any]:
    """Everything stored: headers, histories of every run, inboxes."""
    found = []
    for header in store.list_instances(limit=10_000):
        iid = header.instance_id
        runs = [
            [e.model_dump(mode="json") for e in store.history(iid, run=r)]
            for r in range(1, header.run + 1)
        ]
        inbox = [m.model_dump(mode="json") for m in store.load(iid).inbox]
        found.append((header.model_dump(mode="json"), runs, inbox))
    return sorted(found, key=lambda item: str(item[0]["instance_id"]))


@pytest.fixture
def api() -> Iterator[Api]:
    store = MemoryStore()
    yield Api(store)
    store.close()


@pytest.fixture
def running(tmp_path: Any) -> Iterator[Api]:
    """An API on a SQLite store with a worker stepping its instances."""
    store = SQLiteStore(tmp_path / "api.db")
    runtime = Runtime(store, workflows=(api_greet, api_wait, api_steps))
    try:
        yield Api(store)
    finally:
        runtime.close()
        store.close()


def wait_done(api: Api, iid: str) -> dict[str, Any]:
    code, body = api.get(f"/instances/{quote(iid, safe='')}", wait="60")
    assert code == 200, body
    assert Status(body["status"]).is_terminal, body
    return dict(body)


# ----------------------------------------------------------------------------- workflows


def test_workflows_are_listed_with_the_json_schema_of_their_input(api: Api) -> None:
    code, body = api.get("/workflows")
    assert code == 200
    by_name = {w["name"]: w for w in body["workflows"]}
    greet = by_name["api_greet"]
    assert greet["input_schema"]["required"] == ["name", "age"]
    assert greet["input_schema"]["properties"]["age"]["type"] == "integer"
    assert by_name["api_wait"]["input_schema"] == {"type": "string"}
    assert greet["start_url"] == "/workflows/api_greet"


# ----------------------------------------------------------------------------- start


def test_start_follows_the_async_http_pattern_and_the_worker_runs_it(running: Api) -> None:
    code, headers, body = running.call(
        "POST", "/workflows/api_greet", {"input": {"name": "Ada", "age": 36}}
    )
    assert code == 202, body
    iid = body["instance_id"]
    assert body["created"] is True
    assert body["status_url"] == f"/instances/{iid}"
    assert body["cancel_url"] == f"/instances/{iid}/cancel"
    assert body["terminate_url"] == f"/instances/{iid}/terminate"
    assert body["event_url"] == f"/instances/{iid}/events/{{name}}"
    assert headers["location"] == body["status_url"]
    assert int(headers["retry-after"]) >= 1
    done = wait_done(running, iid)
    assert done["status"] == "COMPLETED"
    assert done["output"] == "hello Ada, 36"
    assert done["custom_status"] == "greeting"


def test_start_is_idempotent_on_the_instance_id(api: Api) -> None:
    body = {"input": {"name": "Ada", "age": 36}, "instance_id": "api-fixed"}
    code, _, first = api.call("POST", "/workflows/api_greet", body)
    assert code == 202 and first["instance_id"] == "api-fixed" and first["created"]
    before = snapshot(api.store)
    code, _, again = api.call("POST", "/workflows/api_greet", body)
    assert code == 202 and again["instance_id"] == "api-fixed" and not again["created"]
    code, _, other = api.call(
        "POST", "/workflows/api_greet", {**body, "input": {"name": "Bob", "age": 1}}
    )
    assert code == 409 and other["error"] == "conflict" and other["field"] == "instance_id"
    code, _, other = api.call("POST", "/workflows/api_wait", {**body, "input": "x"})
    assert code == 409
    assert snapshot(api.store) == before


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "error", "field"),
    [
        ("/workflows/api_nope", {"body": {"input": 1}}, 404, "not_found", "name"),
        ("/workflows/api_greet", {"raw": "{not json"}, 400, "malformed_json", None),
        ("/workflows/api_greet", {"raw": "[1, 2]"}, 422, "invalid", None),
        ("/workflows/api_greet", {"body": {"inpt": {}}}, 422, "invalid", "inpt"),
        (
            "/workflows/api_greet",
            {"body": {"input": {"name": "Ada"}}},
            422,
            "invalid",
            "input.age",
        ),
        (
            "/workflows/api_greet",
            {"body": {"input": {"name": "Ada", "age": "old"}}},
            422,
            "invalid",
            "input.age",
        ),
        (
            "/workflows/api_greet",
            {"body": {"input": {"name": "A", "age": 1}, "instance_id": 7}},
            422,
            "invalid",
            "instance_id",
        ),
        (
            "/workflows/api_greet",
            {"body": {"input": {"name": "A", "age": 1}, "instance_id": "x" * 300}},
            422,
            "invalid",
            "instance_id",
        ),
        (
            "/workflows/api_greet",
            {"raw": json.dumps({"input": {"name": "x" * MAX_BODY_BYTES, "age": 1}})},
            413,
            "payload_too_large",
            None,
        ),
        ("/workflows/api_greet", {"raw": "!!!", "base64_body": True}, 400, "malformed_json", None),
    ],
)
def test_bad_starts_are_refused_with_a_clear_error_and_write_nothing(
    api: Api, path: str, kwargs: dict[str, Any], status: int, error: str, field: str | None
) -> None:
    api.call("POST", "/workflows/api_greet", {"input": {"name": "Ada", "age": 3}})
    before = snapshot(api.store)
    code, _, body = api.call("POST", path, **kwargs)
    assert (code, body["error"], body["field"]) == (status, error, field), body
    assert body["message"]
    assert snapshot(api.store) == before


def test_a_base64_body_is_decoded(api: Api) -> None:
    code, _, body = api.call("POST", "/workflows/api_wait", {"input": "b64"}, base64_body=True)
    assert code == 202, body
    assert api.store.get(body["instance_id"]) is not None


# ----------------------------------------------------------------------------- status


def test_status_long_polls_until_the_instance_ends(running: Api) -> None:
    _, _, started = running.call("POST", "/workflows/api_wait", {"input": "lp"})
    iid = started["instance_id"]
    code, body = running.get(f"/instances/{iid}", wait="0.2")
    assert code == 200
    assert body["status"] in ("PENDING", "RUNNING")  # the wait expired first
    assert body["instance_id"] == iid and body["input"] == "lp"
    code, _, raised = running.call("POST", f"/instances/{iid}/events/go", {"ok": True})
    assert code == 202, raised
    done = wait_done(running, iid)
    assert done["status"] == "COMPLETED"
    assert done["output"] == {"label": "lp", "data": {"ok": True}}


def test_status_errors(api: Api) -> None:
    code, body = api.get("/instances/api-missing")
    assert code == 404 and body["error"] == "not_found" and body["field"] == "instance_id"
    api.call("POST", "/workflows/api_wait", {"input": "s", "instance_id": "api-s"})
    for wait in ("-1", "abc", "61", "nan"):
        code, body = api.get("/instances/api-s", wait=wait)
        assert (code, body["field"]) == (422, "wait"), body


def test_a_small_max_wait_caps_the_long_poll() -> None:
    store = MemoryStore()
    api = Api(store, max_wait=1.0)
    api.call("POST", "/workflows/api_wait", {"input": "c", "instance_id": "api-c"})
    code, body = api.get("/instances/api-c", wait="5")
    assert code == 422 and body["field"] == "wait" and "1" in body["message"]


# ----------------------------------------------------------------------------- history


def test_history_is_paginated_with_next_links(running: Api) -> None:
    _, _, started = running.call("POST", "/workflows/api_steps", {"input": 5})
    iid = started["instance_id"]
    assert wait_done(running, iid)["output"] == 10
    everything = [e.model_dump(mode="json") for e in running.store.history(iid)]
    assert len(everything) > 5
    pages: list[list[Any]] = []
    query: dict[str, str] = {"limit": "2"}
    while True:
        code, body = running.get(f"/instances/{iid}/history", **query)
        assert code == 200, body
        pages.append(body["events"])
        if body["next"] is None:
            break
        link = urlsplit(body["next"])
        assert link.path == f"/instances/{iid}/history"
        query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert all(len(p) == 2 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    assert [e for page in pages for e in page] == everything
    code, body = running.get(f"/instances/{iid}/history")
    assert body["events"] == everything and body["next"] is None


def test_history_errors(api: Api) -> None:
    assert api.get("/instances/api-none/history")[0] == 404
    api.call("POST", "/workflows/api_wait", {"input": "h", "instance_id": "api-h"})
    for name, value in (("limit", "0"), ("limit", "x"), ("after", "-3"), ("run", "2")):
        code, body = api.get("/instances/api-h/history", **{name: value})
        assert (code, body["field"]) == (422, name), body


# ----------------------------------------------------------------------------- events, cancel, terminate


def test_events_cancel_and_terminate(running: Api) -> None:
    _, _, a = running.call("POST", "/workflows/api_wait", {"input": "a"})
    _, _, b = running.call("POST", "/workflows/api_wait", {"input": "b"})
    code, _, body = running.call(
        "POST", f"/instances/{a['instance_id']}/cancel", {"reason": "no longer needed"}
    )
    assert code == 202 and body["requested"] == "cancel"
    code, _, body = running.call("POST", f"/instances/{b['instance_id']}/terminate")
    assert code == 202 and body["requested"] == "terminate"
    assert wait_done(running, a["instance_id"])["status"] == "CANCELED"
    assert wait_done(running, b["instance_id"])["status"] == "TERMINATED"
    before = snapshot(running.store)
    for path in ("cancel", "terminate", "events/go"):
        code, _, body = running.call("POST", f"/instances/{a['instance_id']}/{path}")
        assert code == 409 and body["error"] == "finished", body
    assert snapshot(running.store) == before


def test_event_and_cancel_errors(api: Api) -> None:
    api.call("POST", "/workflows/api_wait", {"input": "e", "instance_id": "api-e"})
    before = snapshot(api.store)
    cases = [
        ("/instances/api-nobody/events/go", {"body": 1}, 404),
        ("/instances/api-nobody/cancel", {}, 404),
        ("/instances/api-nobody/terminate", {}, 404),
        ("/instances/api-e/events/go", {"raw": "{oops"}, 400),
        ("/instances/api-e/cancel", {"body": {"reason": 5}}, 422),
        ("/instances/api-e/cancel", {"body": {"why": "x"}}, 422),
        ("/instances/api-e/terminate", {"raw": "nope"}, 400),
        ("/instances/api-e/events/go", {"raw": "1" * (MAX_BODY_BYTES + 1)}, 413),
    ]
    for path, kwargs, status in cases:
        code, _, body = api.call("POST", path, **kwargs)
        assert code == status, (path, body)
        assert set(body) == {"error", "message", "field"}
    assert snapshot(api.store) == before


# ----------------------------------------------------------------------------- delete, list


def test_delete(api: Api) -> None:
    api.call("POST", "/workflows/api_wait", {"input": "d", "instance_id": "api-d"})
    code, _, body = api.call("DELETE", "/instances/api-d")
    assert code == 200 and body == {"instance_id": "api-d", "deleted": True}
    assert api.store.get("api-d") is None
    code, _, body = api.call("DELETE", "/instances/api-d")
    assert code == 404


def test_list_filters_by_status_and_workflow(running: Api) -> None:
    _, _, done = running.call("POST", "/workflows/api_greet", {"input": {"name": "L", "age": 1}})
    _, _, waiting = running.call("POST", "/workflows/api_wait", {"input": "l"})
    wait_done(running, done["instance_id"])
    code, body = running.get("/instances", status="completed", workflow="api_greet")
    assert code == 200
    assert [i["instance_id"] for i in body["instances"]] == [done["instance_id"]]
    code, body = running.get("/instances", workflow="api_wait")
    assert [i["instance_id"] for i in body["instances"]] == [waiting["instance_id"]]
    code, body = running.get("/instances", limit="1")
    assert len(body["instances"]) == 1
    code, body = running.get("/instances", status="completed,pending,running")
    assert len(body["instances"]) == 2
    for name, value in (("status", "happy"), ("limit", "0"), ("limit", "1001")):
        code, body = running.get("/instances", **{name: value})
        assert (code, body["field"]) == (422, name)


# ----------------------------------------------------------------------------- the rest


def test_the_swagger_page_is_self_contained_and_knows_the_stage(api: Api) -> None:
    event = proxy_event("GET", "/swagger", None)
    event["requestContext"].update(stage="prod", path="/prod/swagger")

    page = api.app.resolve(event, {})

    assert page["statusCode"] == 200
    assert page["multiValueHeaders"]["Content-Type"] == ["text/html; charset=utf-8"]
    html = page["body"]
    assert "SwaggerUIBundle" in html  # Swagger UI itself, inlined
    assert not re.search(r"""(src|href)=['"]?https?://""", html)  # nothing from a CDN
    assert '"/workflows/{name}"' in html and '"/instances/{instance_id}/history"' in html
    assert '"url": "/prod"' in html  # requests from the page go through the stage
    plain = api.app.resolve(proxy_event("GET", "/swagger", None), {})["body"]
    assert '"url": "/"' in plain
    code, spec = api.get("/swagger", format="json")
    assert code == 200 and "/workflows/{name}" in spec["paths"]


def test_unknown_routes_are_json_404s(api: Api) -> None:
    for method, path in (("GET", "/nowhere"), ("PUT", "/workflows/api_greet"), ("POST", "/")):
        code, _, body = api.call(method, path)
        assert code == 404 and body["error"] == "not_found"


def test_the_status_page_is_served_with_relative_urls_and_kept_out_of_openapi(api: Api) -> None:
    page = api.app.resolve(proxy_event("GET", "/", None), {})
    assert page["statusCode"] == 200
    assert page["multiValueHeaders"]["Content-Type"] == ["text/html; charset=utf-8"]
    html = page["body"]
    for url in ("ui/style.css", "ui/app.js", "swagger"):
        assert f'"{url}"' in html  # relative: the page also works under /STAGE/
    assert "http://" not in html and "https://" not in html and 'src="/' not in html
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        result = api.app.resolve(proxy_event("GET", f"/ui/{name}", None), {})
        assert result["statusCode"] == 200
        assert result["multiValueHeaders"]["Content-Type"][0].startswith(kind)
        assert "https://" not in result["body"]  # nothing fetched from elsewhere
    for missing in ("/ui/nope.js", "/ui/..%2Fapi.py", "/ui/__init__.py", "/ui/.hidden.js"):
        code, _, body = api.call("GET", missing)
        assert code == 404 and body["error"] == "not_found", missing
    code, spec = api.get("/openapi.json")
    assert "/" not in spec["paths"] and not any(p.startswith("/ui") for p in spec["paths"])


def test_openapi_document_lists_the_routes(api: Api) -> None:
    code, body = api.get("/openapi.json")
    assert code == 200
    assert body["openapi"].startswith("3.")
    for path in ("/workflows/{name}", "/instances/{instance_id}", "/instances"):
        assert path in body["paths"]


def test_internal_errors_show_a_request_id_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Backend:
        raise RuntimeError("the store is on fire")

    app = build_api(broken)
    result = app.resolve(proxy_event("GET", "/workflows", None), {})
    assert result["statusCode"] == 500
    body = json.loads(result["body"])
    assert body == {"error": "internal", "message": "internal error", "request_id": "req-1"}
    assert "fire" not in result["body"] and "Traceback" not in result["body"]
    assert any("req-1" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_aws_urls_carry_the_stage(api: Api) -> None:
    event = proxy_event("POST", "/workflows/api_wait", json.dumps({"input": "u"}))
    event["requestContext"].update(domainName="abc.execute-api.aws", stage="prod")
    result = api.app.resolve(event, {})
    body = json.loads(result["body"])
    assert body["status_url"] == f"https://abc.execute-api.aws/prod/instances/{body['instance_id']}"


# ----------------------------------------------------------------------------- fuzz

_SEGMENTS = st.one_of(
    st.sampled_from(["api-fz", "api_greet", "api_wait", "go", "%ZZ", "%00", "a%2Fb", ""]),
    st.text(max_size=12),
)
_PATHS = st.one_of(
    st.builds(
        lambda t, a, b: t.format(a=a, b=b),
        st.sampled_from(
            [
                "/workflows",
                "/workflows/{a}",
                "/instances",
                "/instances/{a}",
                "/instances/{a}/history",
                "/instances/{a}/events/{b}",
                "/instances/{a}/cancel",
                "/instances/{a}/terminate",
                "/{a}/{b}",
                "/openapi.json",
            ]
        ),
        _SEGMENTS,
        _SEGMENTS,
    ),
    st.text(max_size=30),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_BODIES = st.one_of(
    st.none(),
    st.text(max_size=40),
    _JSON.map(lambda v: json.dumps(v)),
    st.fixed_dictionaries(
        {},
        optional={
            "input": _JSON,
            "instance_id": st.one_of(st.text(max_size=10), _JSON),
            "reason": _JSON,
        },
    ).map(json.dumps),
)
_QUERIES = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["wait", "limit", "after", "run", "status", "workflow", "x"]),
        st.one_of(
            st.sampled_from(["0", "1", "-1", "0.01", "1e9", "nan", "completed"]),
            st.text(max_size=6),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=_PATHS,
    body=_BODIES,
    query=_QUERIES,
    base64_body=st.booleans(),
)
def test_fuzz_no_5xx_and_rejected_requests_change_nothing(
    method: str, path: str, body: str | None, query: dict[str, str] | None, base64_body: bool
) -> None:
    store = MemoryStore()
    api = Api(store, max_wait=0.05)
    api.call("POST", "/workflows/api_wait", {"input": "fz", "instance_id": "api-fz"})
    before = snapshot(store)
    if not path.startswith("/"):
        path = "/" + path
    if body is not None and base64_body:
        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    result = api.app.resolve(proxy_event(method, path, body, query, base64_body), {})
    code = int(result["statusCode"])
    assert code < 500, result
    content_type = (result.get("multiValueHeaders") or {}).get("Content-Type", [""])[0]
    if not content_type.startswith("application/json"):  # the status page's files
        page = path in ("/", "/swagger") or path.startswith("/ui/")
        assert code == 200 and method == "GET" and page
        return
    answer = json.loads(result["body"])
    if code >= 400:
        assert answer["error"] and answer["message"], answer
        assert snapshot(store) == before
