"""Hostile input through the Runtime and the CLI: refused clearly, or run to a clear end.

Every case either raises a clear error and leaves the store unchanged, or
ends the instance FAILED or STUCK with the reason in its status; none stops
the worker: after all of them, one Runtime still runs a healthy instance.
(The HTTP API does not exist yet; its cases belong with it.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

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
