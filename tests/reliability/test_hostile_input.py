"""Hostile input through the Runtime and the CLI: refused clearly, or run to a clear end.

Every case either raises a clear error and leaves the store unchanged, or
ends the instance FAILED or STUCK with the reason in its status; none stops
the worker: after all of them, one Runtime still runs a healthy instance.

The HTTP API (:mod:`durable.api`, called with API Gateway proxy events, on
SQLite and on DynamoDB through moto) answers every hostile request (bodies
that are not JSON or not the JSON asked for, 10 MB, 10,000 levels deep,
lone surrogates, repeated keys; odd, control and invalid characters in ids
and event names; events to finished or unknown instances; huge, negative,
non-numeric and repeated query values) with a 4xx JSON error naming the
problem, never a 5xx, and leaves every stored byte as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from durable import Context, Runtime, SQLiteStore, Status, activity, workflow
from durable.cli import app
from durable.codec import MAX_NESTING
from durable.errors import (
    InstanceFinishedError,
    InstanceNotFoundError,
    SerializationError,
    WorkflowFailed,
)
from durable.history import InstanceStatus
from durable.store.base import HistoryStore
from tests.conftest import STORE_FACTORIES
from tests.test_api import Api as ApiClient
from tests.test_api import proxy_event
from tests.test_api import snapshot as api_snapshot

HERE = Path(__file__).resolve()
WAIT = 60.0
TEN_MB = 10 * 1024 * 1024


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return [value]


class Order(BaseModel):
    order_id: str
    cents: int


@activity(name="rel_h_size")
def rel_h_size(text: str) -> int:
    return len(text)


@activity(name="rel_h_unserializable")
def rel_h_unserializable() -> Any:
    return object()


@activity(name="rel_h_too_deep")
def rel_h_too_deep() -> Any:
    return nested(MAX_NESTING + 50)


@activity(name="rel_h_exit")
def rel_h_exit() -> None:
    sys.exit(3)


@workflow(name="rel_h_echo")
def rel_h_echo(ctx: Context, value: Any) -> Generator[Any, Any, Any]:
    yield ctx.sleep(0)
    return value


@workflow(name="rel_h_typed")
def rel_h_typed(ctx: Context, order: Order) -> Generator[Any, Any, str]:
    yield ctx.sleep(0)
    return order.order_id


@workflow(name="rel_h_big")
def rel_h_big(ctx: Context, text: str) -> Generator[Any, Any, list[int]]:
    size = yield ctx.call(rel_h_size, text)
    data = yield ctx.wait_for_event("big")
    return [size, len(data)]


@workflow(name="rel_h_waits")
def rel_h_waits(ctx: Context, name: str) -> Generator[Any, Any, Any]:
    return (yield ctx.wait_for_event(name))


@workflow(name="rel_h_not_a_task")
def rel_h_not_a_task(ctx: Context) -> Generator[Any, Any, None]:
    yield 42


@workflow(name="rel_h_raises")
def rel_h_raises(ctx: Context) -> Generator[Any, Any, None]:
    yield ctx.sleep(0)
    raise KeyError("no such customer")


@workflow(name="rel_h_plain")
def rel_h_plain(ctx: Context, value: int) -> int:
    return value + 1  # not a generator: never yields


@workflow(name="rel_h_generator_without_yield")
def rel_h_generator_without_yield(ctx: Context) -> Generator[Any, Any, str]:
    return "done"
    yield  # type: ignore[unreachable]  # makes it a generator


@workflow(name="rel_h_call")
def rel_h_call(ctx: Context, which: str) -> Generator[Any, Any, Any]:
    acts = {"unserializable": rel_h_unserializable, "deep": rel_h_too_deep, "exit": rel_h_exit}
    return (yield ctx.call(acts[which]))


@workflow(name="rel_h_exit_workflow")
def rel_h_exit_workflow(ctx: Context) -> Generator[Any, Any, None]:
    yield ctx.sleep(0)
    sys.exit(2)


@workflow(name="rel_h_runaway")
def rel_h_runaway(ctx: Context) -> Generator[Any, Any, None]:
    while True:  # a loop that forgot its yield
        with contextlib.suppress(Exception):  # does not catch the runaway signal
            ctx.uuid()
    yield ctx.sleep(0)  # type: ignore[unreachable]


@workflow(name="rel_h_returns_deep")
def rel_h_returns_deep(ctx: Context) -> Generator[Any, Any, Any]:
    yield ctx.sleep(0)
    return nested(MAX_NESTING + 1)


# ----------------------------------------------------------------------------- Runtime


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("hostile") / "durable.db"
    logging.disable(logging.CRITICAL)  # the cases below make the runtime log errors on purpose
    try:
        with Runtime(f"sqlite:///{db}", time_skipping=True) as runtime:
            yield runtime
            # No case stopped the worker: it still runs a healthy instance.
            assert runtime._thread.is_alive()
            iid = runtime.start(rel_h_echo, "still serving")
            assert runtime.wait(iid, timeout=WAIT) == "still serving"
    finally:
        logging.disable(logging.NOTSET)


def _snapshot(rt: Runtime) -> list[tuple[str, str, int]]:
    return sorted(
        (h.instance_id, h.status.value, h.version) for h in rt.store.list_instances(limit=1_000_000)
    )


def _ended(rt: Runtime, iid: str, status: Status) -> InstanceStatus:
    with pytest.raises(WorkflowFailed):
        rt.wait(iid, timeout=WAIT)
    header = rt.status(iid)
    assert header.status == status
    assert header.error is not None
    return header


@pytest.mark.parametrize(
    ("wf", "value", "message"),
    [
        (rel_h_typed, "not an order", "does not match"),
        (rel_h_typed, {"order_id": "o1", "cents": "lots"}, "cents"),
        (rel_h_echo, object(), "not JSON-serializable"),
        (rel_h_echo, {"f": lambda: 1}, "not JSON-serializable"),
        (rel_h_echo, [1.0, float("nan")], "JSON cannot represent"),
        (rel_h_echo, {"x": float("-inf")}, "JSON cannot represent"),
        (rel_h_echo, nested(100_000), "cannot be encoded"),
        (rel_h_echo, nested(MAX_NESTING + 1), "levels deep"),
    ],
    ids=[
        "wrong-type",
        "wrong-field-type",
        "object",
        "function",
        "nan",
        "infinity",
        "nested-100000",
        "nested-101",
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    rt: Runtime, wf: Any, value: Any, message: str
) -> None:
    before = _snapshot(rt)
    with pytest.raises(SerializationError, match=message):
        rt.start(wf, value)
    assert _snapshot(rt) == before


def test_input_as_deep_as_allowed_round_trips(rt: Runtime) -> None:
    value = nested(MAX_NESTING, leaf="bottom")
    assert rt.wait(rt.start(rel_h_echo, value), timeout=WAIT) == value


def test_ten_megabyte_input_and_event_go_through(rt: Runtime) -> None:
    iid = rt.start(rel_h_big, "x" * TEN_MB)
    rt.raise_event(iid, "big", "y" * TEN_MB)
    assert rt.wait(iid, timeout=WAIT) == [TEN_MB, TEN_MB]


@pytest.mark.parametrize(
    "bad_id",
    ["", "   ", "a\x00b", "line\nbreak", "tab\t", "del\x7f", "\ud800", "x" * 257],
    ids=["empty", "blank", "nul", "newline", "tab", "del", "lone-surrogate", "too-long"],
)
def test_unusable_instance_ids_are_refused(rt: Runtime, bad_id: str) -> None:
    before = _snapshot(rt)
    with pytest.raises(ValueError, match="instance id"):
        rt.start(rel_h_echo, 1, instance_id=bad_id)
    with pytest.raises(ValueError, match="instance id"):
        rt.raise_event(bad_id, "e", 1)
    assert _snapshot(rt) == before


@pytest.mark.parametrize(
    "odd",
    ["é\u0301", "\u202eevil", "zero\u200bwidth", "🦆🦆", "\ufeffbom", "ok\u0085", "日本語", "a:1"],
)
def test_odd_unicode_ids_and_event_names_work_and_stay_apart(rt: Runtime, odd: str) -> None:
    iid = rt.start(rel_h_waits, odd, instance_id=f"id-{odd}")
    assert iid == f"id-{odd}"
    rt.raise_event(iid, odd, {"name": odd})
    assert rt.wait(iid, timeout=WAIT) == {"name": odd}
    assert rt.store.get(f"id-{odd}".upper() if odd.upper() != odd else f"id-{odd}x") is None


def test_event_names_with_control_characters_are_delivered_and_bad_ones_refused(
    rt: Runtime,
) -> None:
    iid = rt.start(rel_h_waits, "a\x00b\n")
    rt.raise_event(iid, "a\x00b\n", "ctl")
    assert rt.wait(iid, timeout=WAIT) == "ctl"
    waiting = rt.start(rel_h_waits, "never")
    before = rt.store.load(waiting).inbox
    for name, error in (("", ValueError), ("\udcff", ValueError), (None, ValueError)):
        with pytest.raises(error):
            rt.raise_event(waiting, name, 1)  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="levels deep"):
        rt.raise_event(waiting, "never", nested(MAX_NESTING + 150))
    with pytest.raises(SerializationError):
        rt.raise_event(waiting, "never", object())
    assert rt.store.load(waiting).inbox == before
    rt.terminate(waiting)


def test_events_to_finished_or_unknown_instances_are_refused(rt: Runtime) -> None:
    done = rt.start(rel_h_echo, "x")
    rt.wait(done, timeout=WAIT)
    history = rt.history(done)
    with pytest.raises(InstanceFinishedError):
        rt.raise_event(done, "late", 1)
    with pytest.raises(InstanceFinishedError):
        rt.cancel(done)
    assert rt.history(done) == history and rt.status(done).status == Status.COMPLETED
    before = _snapshot(rt)
    with pytest.raises(InstanceNotFoundError):
        rt.raise_event("no-such-instance", "e", 1)
    assert _snapshot(rt) == before


@pytest.mark.parametrize(
    ("wf", "arg", "status", "error_type", "message"),
    [
        (rel_h_not_a_task, None, Status.FAILED, "TypeError", "not a task"),
        (rel_h_raises, None, Status.FAILED, "KeyError", "no such customer"),
        (
            rel_h_call,
            "unserializable",
            Status.FAILED,
            "durable.errors.SerializationError",
            "not JSON-serializable",
        ),
        (rel_h_call, "deep", Status.FAILED, "durable.errors.SerializationError", "levels deep"),
        (rel_h_call, "exit", Status.FAILED, "SystemExit", "3"),
        (rel_h_exit_workflow, None, Status.FAILED, "SystemExit", "2"),
        (
            rel_h_returns_deep,
            None,
            Status.FAILED,
            "durable.errors.SerializationError",
            "levels deep",
        ),
        (
            rel_h_runaway,
            None,
            Status.STUCK,
            "durable.errors.InvalidHistoryError",
            "without waiting",
        ),
    ],
    ids=[
        "yields-42",
        "raises",
        "activity-unserializable",
        "activity-too-deep",
        "activity-exit",
        "workflow-exit",
        "returns-too-deep",
        "runaway-loop",
    ],
)
def test_broken_code_ends_failed_or_stuck_with_the_reason(
    rt: Runtime, wf: Any, arg: Any, status: Status, error_type: str, message: str
) -> None:
    iid = rt.start(wf, arg)
    header = _ended(rt, iid, status)
    assert header.error is not None
    assert header.error.type == error_type
    assert message in header.error.message


def test_workflows_that_never_yield_complete(rt: Runtime) -> None:
    assert rt.wait(rt.start(rel_h_plain, 41), timeout=WAIT) == 42
    assert rt.wait(rt.start(rel_h_generator_without_yield), timeout=WAIT) == "done"


# ----------------------------------------------------------------------------- CLI


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _refused(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cli.db")


def _instances(db: str) -> list[str]:
    if not Path(db).exists():
        return []
    store = SQLiteStore(db)
    try:
        return [h.instance_id for h in store.list_instances(limit=1000)]
    finally:
        store.close()


ECHO = f"{HERE}:rel_h_echo"
TYPED = f"{HERE}:rel_h_typed"


@pytest.mark.parametrize(
    ("spec", "text", "fragment"),
    [
        (ECHO, "{not json", "not valid JSON"),
        (ECHO, "[" * 100_000 + "]" * 100_000, "too deeply"),
        (ECHO, json.dumps(nested(MAX_NESTING + 1)), "levels deep"),
        (TYPED, '"an order?"', "does not match"),
        (TYPED, '{"order_id": 1, "cents": "x"}', "cents"),
        (ECHO, "\x00", "not valid JSON"),
    ],
    ids=["invalid-json", "nested-100000", "nested-101", "wrong-type", "wrong-fields", "nul"],
)
def test_cli_refuses_bad_input_with_one_line_and_writes_nothing(
    db: str, spec: str, text: str, fragment: str
) -> None:
    _refused(cli("start", spec, "--input", text, "--db", db), fragment)
    assert _instances(db) == []


def test_cli_takes_a_ten_megabyte_input_from_a_file(db: str, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps("z" * TEN_MB))
    started = cli("start", ECHO, "--input", f"@{big}", "--db", db, "--id", "big")
    assert started.exit_code == 0, started.output
    store = SQLiteStore(db)
    try:
        header = store.get("big")
        assert header is not None and header.input == "z" * TEN_MB
    finally:
        store.close()


def test_cli_refuses_bad_ids_events_and_targets(db: str) -> None:
    assert cli("start", ECHO, "--input", "1", "--db", db, "--id", "done").exit_code == 0
    assert cli("worker", "--module", str(HERE), "--drain", "--db", db).exit_code == 0
    _refused(cli("start", ECHO, "--input", "1", "--db", db, "--id", "a\x01b"), "control")
    _refused(cli("status", "\udcff", "--db", db), "not valid Unicode")
    _refused(cli("signal", "nobody", "e", "--db", db), "no workflow instance")
    _refused(cli("signal", "done", "e", "--db", db), "already ended")
    _refused(cli("signal", "done", "\udcff", "--db", db), "not valid Unicode")
    _refused(cli("signal", "done", "e", "--data", "[" * 100_000, "--db", db), "too deeply")
    _refused(cli("cancel", "done", "--db", db), "already ended")
    assert sorted(_instances(db)) == ["done"]


# ----------------------------------------------------------------------------- HTTP API


@workflow(name="rel_h_api_waits")
def rel_h_api_waits(ctx: Context, label: str) -> Generator[Any, Any, Any]:
    data = yield ctx.wait_for_event("go")
    return [label, data]


@dataclass
class Http:
    """The HTTP API on a store holding a waiting instance ``live`` and a finished one ``done``."""

    api: ApiClient
    store: HistoryStore


def _http_store(kind: str, tmp: Path) -> Iterator[HistoryStore]:
    if kind == "sqlite":
        store: HistoryStore = SQLiteStore(tmp / "api.db")
        try:
            yield store
        finally:
            store.close()
        return
    with STORE_FACTORIES["dynamodb"](tmp) as opened:
        yield opened


@pytest.fixture(scope="module", params=["sqlite", "dynamodb"])
def http(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Http]:
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    for store in _http_store(request.param, tmp):
        with Runtime(store, time_skipping=True) as runtime:
            done = runtime.start(rel_h_echo, "finished", instance_id="done")
            assert runtime.wait(done, timeout=WAIT) == "finished"
            live = runtime.start(rel_h_api_waits, "waiting", instance_id="live")
            deadline = time.monotonic() + WAIT
            while (header := store.get(live)) is None or header.status != Status.RUNNING:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        logging.disable(logging.CRITICAL)  # a 5xx would log; the assertions below catch it
        try:
            yield Http(ApiClient(store), store)
        finally:
            logging.disable(logging.NOTSET)


TEN_MB_TEXT = json.dumps("x" * TEN_MB)
DEEP_ARRAYS = "[" * 10_000 + "]" * 10_000
DEEP_OBJECTS = '{"a":' * 10_000 + "1" + "}" * 10_000
LONE = "%ED%A0%80"  # the UTF-8 bytes a lone surrogate (U+D800) would have
GREET = {"input": {"order_id": "o1", "cents": 5}}

# (method, path, JSON body or raw text, query, status, error code, words the message has)
HOSTILE_REQUESTS: list[tuple[str, str, Any, dict[str, Any] | None, int, str, str]] = [
    # Bodies that are not JSON, or not the JSON asked for.
    ("POST", "/workflows/rel_h_typed", "raw:{not json", None, 400, "malformed_json", "not JSON"),
    ("POST", "/workflows/rel_h_typed", "raw:\x00\x01", None, 400, "malformed_json", "not JSON"),
    ("POST", "/workflows/rel_h_typed", [], None, 422, "invalid", "JSON object"),
    ("POST", "/workflows/rel_h_typed", "text", None, 422, "invalid", "JSON object"),
    ("POST", "/workflows/rel_h_typed", {"surprise": 1}, None, 422, "invalid", "unknown field"),
    ("POST", "/workflows/rel_h_typed", {"input": "order"}, None, 422, "invalid", "input"),
    (
        "POST",
        "/workflows/rel_h_typed",
        {"input": {"order_id": 5, "cents": "lots"}},
        None,
        422,
        "invalid",
        "input.order_id",
    ),
    (
        "POST",
        "/workflows/rel_h_typed",
        {**GREET, "instance_id": 7},
        None,
        422,
        "invalid",
        "instance_id must be a string",
    ),
    (
        "POST",
        "/workflows/rel_h_typed",
        {**GREET, "instance_id": "a\x00b"},
        None,
        422,
        "invalid",
        "control characters",
    ),
    (
        "POST",
        "/workflows/rel_h_typed",
        {**GREET, "instance_id": "x" * 300},
        None,
        422,
        "invalid",
        "limit is 256",
    ),
    (
        "POST",
        "/workflows/rel_h_typed",
        'raw:{"input": {"order_id": "a", "cents": 1}, "input": 2}',
        None,
        400,
        "malformed_json",
        "appears twice",
    ),
    ("POST", "/workflows/rel_h_echo", "raw:" + TEN_MB_TEXT, None, 413, "payload_too_large", "over"),
    ("POST", "/workflows/rel_h_echo", "raw:" + DEEP_ARRAYS, None, 400, "malformed_json", "depth"),
    ("POST", "/workflows/rel_h_echo", "raw:" + DEEP_OBJECTS, None, 400, "malformed_json", "depth"),
    ("POST", "/workflows/rel_h_echo", {"input": nested(150)}, None, 422, "invalid", "levels deep"),
    (
        "POST",
        "/workflows/rel_h_echo",
        'raw:{"input": "\\ud800"}',
        None,
        422,
        "invalid",
        "lone surrogate",
    ),
    (
        "POST",
        "/workflows/rel_h_echo",
        'raw:{"input": {"\\udfff": 1}}',
        None,
        422,
        "invalid",
        "lone surrogate",
    ),
    (
        "POST",
        "/workflows/" + quote("no\x00such", safe=""),
        {},
        None,
        404,
        "not_found",
        "no workflow",
    ),
    ("POST", f"/workflows/{LONE}", {}, None, 404, "not_found", "no workflow"),
    # Events: bad bodies, finished and unknown instances, odd ids and names.
    ("POST", "/instances/live/events/go", "raw:{", None, 400, "malformed_json", "not JSON"),
    ("POST", "/instances/live/events/go", "raw:" + TEN_MB_TEXT, None, 413, "payload_too_large", ""),
    ("POST", "/instances/live/events/go", "raw:" + DEEP_ARRAYS, None, 400, "malformed_json", ""),
    ("POST", "/instances/live/events/go", "raw:" + DEEP_OBJECTS, None, 400, "malformed_json", ""),
    ("POST", "/instances/live/events/go", nested(150), None, 422, "invalid", "levels deep"),
    ("POST", "/instances/live/events/go", 'raw:"\\ud800"', None, 422, "invalid", "surrogate"),
    ("POST", "/instances/live/events/go", 'raw:{"a": 1, "a": 2}', None, 400, "malformed_json", ""),
    ("POST", "/instances/done/events/go", 1, None, 409, "finished", "already ended"),
    ("POST", "/instances/done/events/" + quote("\x00\x1f", safe=""), 1, None, 409, "finished", ""),
    ("POST", f"/instances/done/events/{LONE}", 1, None, 409, "finished", "already ended"),
    ("POST", "/instances/done/events/" + quote("😀\u202e", safe=""), 1, None, 409, "finished", ""),
    ("POST", "/instances/nope/events/go", 1, None, 404, "not_found", "no workflow instance"),
    (
        "POST",
        "/instances/" + quote("a\x00b", safe="") + "/events/go",
        1,
        None,
        404,
        "not_found",
        "",
    ),
    ("POST", "/instances/%7F/events/go", 1, None, 404, "not_found", "control characters"),
    ("POST", f"/instances/{LONE}/events/go", 1, None, 404, "not_found", "no workflow instance"),
    ("POST", "/instances/%20/events/go", 1, None, 404, "not_found", "non-empty"),
    ("POST", "/instances/" + "x" * 300 + "/events/go", 1, None, 404, "not_found", "256"),
    (
        "POST",
        "/instances/" + quote("e\u0301😀", safe="") + "/events/go",
        1,
        None,
        404,
        "not_found",
        "",
    ),
    ("POST", "/instances/live/events/", 1, None, 404, "not_found", "no route"),
    # Cancel, terminate, delete.
    ("POST", "/instances/live/cancel", {"reason": 5}, None, 422, "invalid", "reason must be"),
    ("POST", "/instances/live/cancel", [1], None, 422, "invalid", "JSON object"),
    ("POST", "/instances/live/terminate", 'raw:{"reason": "\\udfff"}', None, 422, "invalid", ""),
    ("POST", "/instances/done/cancel", None, None, 409, "finished", "cancel refused"),
    ("POST", "/instances/done/terminate", None, None, 409, "finished", "terminate refused"),
    ("POST", "/instances/nope/terminate", None, None, 404, "not_found", "no workflow instance"),
    ("DELETE", "/instances/nope", None, None, 404, "not_found", "no workflow instance"),
    ("DELETE", f"/instances/{LONE}", None, None, 404, "not_found", ""),
    # Query values: huge, negative, not numbers, repeated.
    ("GET", "/instances", None, {"limit": "1" + "0" * 30}, 422, "invalid", "limit must be from"),
    ("GET", "/instances", None, {"limit": "9" * 5000}, 422, "invalid", "limit must be from"),
    ("GET", "/instances", None, {"limit": "-1"}, 422, "invalid", "limit must be from"),
    ("GET", "/instances", None, {"limit": "0"}, 422, "invalid", "limit must be from"),
    ("GET", "/instances", None, {"limit": "--5"}, 422, "invalid", "limit must be an integer"),
    ("GET", "/instances", None, {"limit": "1e3"}, 422, "invalid", "limit must be an integer"),
    ("GET", "/instances", None, {"limit": "\u0663"}, 422, "invalid", "limit must be an integer"),
    ("GET", "/instances", None, {"limit": ""}, 422, "invalid", "limit must be an integer"),
    ("GET", "/instances", None, {"status": "BOGUS"}, 422, "invalid", "status must be among"),
    ("GET", "/instances", None, {"workflow": "\udc80"}, 422, "invalid", "lone surrogate"),
    ("GET", "/instances", None, {"limit": ["1", "2"]}, 422, "invalid", "limit is given 2 times"),
    ("GET", "/instances", None, {"status": ["RUNNING", "COMPLETED"]}, 422, "invalid", "status is"),
    ("GET", "/instances/live/history", None, {"after": "-5"}, 422, "invalid", "after must be"),
    ("GET", "/instances/live/history", None, {"after": "1" + "0" * 40}, 422, "invalid", "after"),
    ("GET", "/instances/live/history", None, {"after": "abc"}, 422, "invalid", "after"),
    ("GET", "/instances/live/history", None, {"limit": "-1"}, 422, "invalid", "limit must be"),
    ("GET", "/instances/live/history", None, {"run": "0"}, 422, "invalid", "run must be"),
    ("GET", "/instances/live/history", None, {"run": "-1"}, 422, "invalid", "run must be"),
    ("GET", "/instances/live/history", None, {"run": "2"}, 422, "invalid", "run must be"),
    ("GET", "/instances/live/history", None, {"after": ["0", "1"]}, 422, "invalid", "after is"),
    ("GET", "/instances/nope/history", None, None, 404, "not_found", "no workflow instance"),
    ("GET", "/instances/live", None, {"wait": "1e309"}, 422, "invalid", "wait must be"),
    ("GET", "/instances/live", None, {"wait": "9" * 5000}, 422, "invalid", "wait must be"),
    ("GET", "/instances/live", None, {"wait": "-1"}, 422, "invalid", "wait must be"),
    ("GET", "/instances/live", None, {"wait": "nan"}, 422, "invalid", "wait must be"),
    ("GET", "/instances/live", None, {"wait": "inf"}, 422, "invalid", "wait must be"),
    ("GET", "/instances/live", None, {"wait": "61"}, 422, "invalid", "wait must be"),
    ("GET", "/instances/live", None, {"wait": ["0", "0"]}, 422, "invalid", "wait is given"),
    ("GET", "/instances/" + quote("\x00", safe=""), None, None, 404, "not_found", "control"),
]


def _hostile_id(case: tuple[str, str, Any, dict[str, Any] | None, int, str, str]) -> str:
    method, path, body, query, *_ = case
    shown = path if len(path) <= 40 else path[:37] + "..."
    extra = ""
    if isinstance(body, str) and body.startswith("raw:"):
        extra = f" raw[{len(body) - 4}]" if len(body) > 24 else f" {body}"
    elif body is not None:
        extra = " " + (json.dumps(body)[:30])
    if query:
        extra += " ?" + ",".join(f"{k}={str(v)[:12]}" for k, v in query.items())
    return (method + " " + shown + extra).encode("ascii", "backslashreplace").decode()


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "status", "code", "words"),
    HOSTILE_REQUESTS,
    ids=[_hostile_id(case) for case in HOSTILE_REQUESTS],
)
def test_hostile_http_requests_get_a_clear_4xx_and_change_nothing(
    http: Http,
    method: str,
    path: str,
    body: Any,
    query: dict[str, Any] | None,
    status: int,
    code: str,
    words: str,
) -> None:
    before = api_snapshot(http.store)
    raw = body[4:] if isinstance(body, str) and body.startswith("raw:") else None
    text = raw if raw is not None else (None if body is None else json.dumps(body))
    single = {k: (v[-1] if isinstance(v, list) else v) for k, v in (query or {}).items()}
    event = proxy_event(method, path, text, single or None)
    if query:  # as API Gateway passes them: the last value, and every value
        event["multiValueQueryStringParameters"] = {
            k: (v if isinstance(v, list) else [v]) for k, v in query.items()
        }
    result = http.api.app.resolve(event, {})
    answer = json.loads(result["body"])
    assert result["statusCode"] == status, answer
    assert answer["error"] == code, answer
    assert words in answer["message"], answer
    assert "Traceback" not in result["body"]
    assert api_snapshot(http.store) == before


def test_the_api_still_serves_after_the_hostile_requests(http: Http) -> None:
    code, answer = http.api.get("/instances/done")
    assert code == 200 and answer["status"] == "COMPLETED" and answer["output"] == "finished"
    code, answer = http.api.get("/instances", status="RUNNING")
    assert code == 200 and [h["instance_id"] for h in answer["instances"]] == ["live"]
