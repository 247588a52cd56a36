"""The embedding API's promises: ``durable.run`` and ``Runtime`` (the local driver).

Activities here count their executions in module-level counters and, where a
test needs to hold a workflow at a point, block on a ``threading.Event``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import durable
from durable import (
    Cancelled,
    Context,
    InstanceExistsError,
    InstanceNotFoundError,
    MemoryStore,
    NonDeterminismError,
    RetryPolicy,
    Runtime,
    SQLiteStore,
    Status,
    Workflow,
    WorkflowFailed,
    activity,
    workflow,
)
from durable.history import (
    ActivityCompleted,
    ActivityRetryScheduled,
    ActivityScheduled,
    CancelRequested,
    Event,
    TimerFired,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable.runtime.clock import VirtualClock

WAIT = 20.0  # seconds: a generous bound; nothing here should take more than a fraction of it

RUNS: Counter[str] = Counter()
"""How often each activity ran, by the key the test passed it."""
GATES: dict[str, threading.Event] = {}
"""Events that blocking activities wait on, by key."""


def _gate(key: str) -> threading.Event:
    return GATES.setdefault(key, threading.Event())


@pytest.fixture(autouse=True)
def _open_gates() -> Iterator[None]:
    yield
    for gate in GATES.values():  # never leave a pool thread blocked behind a test
        gate.set()


def _eventually(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _kinds(history: list[Event]) -> list[str]:
    return [e.kind for e in history]


class Greeting(BaseModel):
    text: str
    count: int


class PaymentRejected(Exception):
    """A domain error whose type must survive the trip to the caller."""


# ----------------------------------------------------------------------------- activities


@activity(name="rt.count")
def count(key: str) -> int:
    RUNS[key] += 1
    return RUNS[key]


@activity(name="rt.blocking")
def blocking(key: str) -> str:
    RUNS[key] += 1
    if not _gate(key).wait(WAIT):
        raise RuntimeError(f"gate {key} never opened")
    return f"{key} done"


@activity(name="rt.flaky")
def flaky(key: str, failures: int) -> str:
    RUNS[key] += 1
    if RUNS[key] <= failures:
        raise ConnectionError(f"attempt {RUNS[key]} of {key} failed")
    return f"ok after {RUNS[key]}"


@activity(name="rt.slow_first", timeout=timedelta(milliseconds=200))
def slow_first(key: str) -> str:
    RUNS[key] += 1
    if RUNS[key] == 1:
        _gate(key).wait(WAIT)  # far longer than the timeout
    return f"attempt {RUNS[key]}"


@activity(name="rt.nap")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@activity(name="rt.reject")
def reject(amount: int) -> None:
    raise PaymentRejected(f"{amount} is too much")


# ----------------------------------------------------------------------------- workflows


@workflow(name="rt_greet")
def greet(ctx: Context, name: str) -> Generator[Any, Any, Greeting]:
    n = yield ctx.call(count, f"greet:{name}")
    return Greeting(text=f"hello {name}", count=n)


@workflow(name="rt_block_then_event")
def block_then_event(ctx: Context, key: str) -> Generator[Any, Any, list[Any]]:
    first = yield ctx.call(blocking, key)
    data = yield ctx.wait_for_event("go")
    return [first, data]


@workflow(name="rt_fail")
def fail(ctx: Context, amount: int) -> Generator[Any, Any, None]:
    yield ctx.call(reject, amount)


@workflow(name="rt_cancellable")
def cancellable(ctx: Context, key: str) -> Generator[Any, Any, str]:
    ctx.set_status("waiting")
    try:
        yield ctx.wait_for_event("never")
    except Cancelled:
        ctx.set_status("cleaning up")
        yield ctx.call(count, f"{key}:cleanup")
        raise
    return "not cancelled"


@workflow(name="rt_cancel_swallowed")
def cancel_swallowed(ctx: Context) -> Generator[Any, Any, str]:
    try:
        yield ctx.sleep(timedelta(days=1))
    except Cancelled as exc:
        return f"stopped: {exc.reason}"
    return "slept"


@workflow(name="rt_child")
def child(ctx: Context, n: int) -> Generator[Any, Any, int]:
    if n < 0:
        yield ctx.call(reject, n)
    yield ctx.sleep(timedelta(minutes=n))
    return n * 10


@workflow(name="rt_parent")
def parent(ctx: Context, ns: list[int]) -> Generator[Any, Any, dict[str, Any]]:
    results = yield ctx.all([ctx.child(child, n) for n in ns if n >= 0])
    try:
        yield ctx.child(child, -1, instance_id=f"{ctx.instance_id}-bad-child")
    except PaymentRejected as exc:
        return {"results": results, "child_error": str(exc)}
    return {"results": results, "child_error": None}


@workflow(
    name="rt_retrying", retry=RetryPolicy(max_attempts=4, initial_interval=timedelta(minutes=1))
)
def retrying(ctx: Context, key: str) -> Generator[Any, Any, str]:
    result: str = yield ctx.call(flaky, key, 2)
    return result


@workflow(name="rt_retry_exhausted")
def retry_exhausted(ctx: Context, key: str) -> Generator[Any, Any, str]:
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=30), backoff=3.0)
    result: str = yield ctx.call(flaky, key, 99, retry=policy)
    return result


@workflow(name="rt_timeout_retry")
def timeout_retry(ctx: Context, key: str) -> Generator[Any, Any, str]:
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=5))
    result: str = yield ctx.call(slow_first, key, retry=policy)
    return result


@workflow(name="rt_timeout_no_retry")
def timeout_no_retry(ctx: Context, key: str) -> Generator[Any, Any, str]:
    result: str = yield ctx.call(slow_first, key, timeout=timedelta(milliseconds=100))
    return result


@workflow(name="rt_naps_with_timeout")
def naps_with_timeout(ctx: Context, n: int) -> Generator[Any, Any, list[float]]:
    timeout = timedelta(milliseconds=400)
    naps: list[float] = yield ctx.all([ctx.call(nap, 0.15, timeout=timeout) for _ in range(n)])
    return naps


@workflow(name="rt_activity_vs_timer")
def activity_vs_timer(ctx: Context, rounds: int) -> Generator[Any, Any, list[str]]:
    winners: list[str] = []
    for _ in range(rounds):
        work = ctx.call(nap, 0.02)
        timer = ctx.sleep(timedelta(seconds=1))
        winner = yield ctx.any([work, timer])
        winners.append("activity" if winner is work else "timer")
    return winners


@workflow(name="rt_short_sleep")
def short_sleep(ctx: Context) -> Generator[Any, Any, float]:
    before = ctx.now()
    yield ctx.sleep(timedelta(milliseconds=200))
    return (ctx.now() - before).total_seconds()


@workflow(name="rt_timed_reminder")
def timed_reminder(ctx: Context, key: str) -> Generator[Any, Any, list[str]]:
    """The remind-user flow, with ``ctx.now()`` recorded around it."""
    started = ctx.now()
    yield ctx.sleep(timedelta(hours=2))
    yield ctx.call(count, key)
    yield ctx.sleep(timedelta(days=1))
    yield ctx.call(count, key)
    return [started.isoformat(), ctx.now().isoformat()]


@workflow(name="rt_event_or_timeout")
def event_or_timeout(ctx: Context) -> Generator[Any, Any, str]:
    event = ctx.wait_for_event("go")
    timer = ctx.sleep(timedelta(hours=1))
    winner = yield ctx.any([event, timer])
    return "event" if winner is event else "timeout"


@workflow(name="rt_counter_chain")
def counter_chain(ctx: Context, n: int) -> Generator[Any, Any, Any]:
    yield ctx.sleep(timedelta(seconds=1))
    if n < 3:
        return ctx.continue_as_new(n + 1)
    return n


@workflow(name="rt_two_steps")
def two_steps(ctx: Context, key: str) -> Generator[Any, Any, list[Any]]:
    first = yield ctx.call(count, f"{key}:a")
    data = yield ctx.wait_for_event("next")
    second = yield ctx.call(count, f"{key}:b")
    return [first, data, second]


def _stuck_v1(ctx: Context, key: str) -> Generator[Any, Any, list[Any]]:
    first = yield ctx.call(count, f"{key}:first")
    data = yield ctx.wait_for_event("go")
    return [first, data]


def _stuck_changed(ctx: Context, key: str) -> Generator[Any, Any, list[Any]]:
    first = yield ctx.call(flaky, key, 0)  # a different first activity: non-deterministic
    return [first]


STUCK_V1: Workflow[Any, Any] = Workflow(_stuck_v1, name="rt_versioned")
STUCK_CHANGED: Workflow[Any, Any] = Workflow(_stuck_changed, name="rt_versioned")
UNREGISTERED: Workflow[Any, Any] = Workflow(_stuck_v1, name="rt_unregistered")


@pytest.fixture
def rt() -> Iterator[Runtime]:
    with Runtime(time_skipping=True) as runtime:
        yield runtime


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'durable.db'}"


# ----------------------------------------------------------------------------- run() and stores


def test_run_drives_one_instance_to_its_result() -> None:
    assert durable.run(greet, "run-1") == Greeting(text="hello run-1", count=1)


def test_run_raises_workflow_failed() -> None:
    with pytest.raises(WorkflowFailed) as failed:
        durable.run(fail, 5, time_skipping=True)
    assert isinstance(failed.value.cause, PaymentRejected)


def test_run_on_a_sqlite_file_keeps_the_instance(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    assert durable.run(greet, "run-2", store=f"sqlite:///{path}").count == 1
    store = SQLiteStore(path)
    try:
        (header,) = store.list_instances()
        assert header.status == Status.COMPLETED
        assert header.output == {"text": "hello run-2", "count": 1}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["none", "url", "object"])
def test_runtime_accepts_every_kind_of_store(kind: str, tmp_path: Path) -> None:
    spec: Any = {
        "none": None,
        "url": f"sqlite:///{tmp_path / 'x' / 'store.db'}",
        "object": MemoryStore(),
    }[kind]
    with Runtime(spec) as runtime:
        iid = runtime.start(greet, f"store-{kind}")
        assert runtime.wait(iid, timeout=WAIT).text == f"hello store-{kind}"
    if kind == "object":  # a store passed in is the caller's: still open, still holding it
        assert spec.get(iid).status == Status.COMPLETED
        with Runtime(spec) as again:
            assert again.status(iid).status == Status.COMPLETED


def test_closed_runtime_refuses_new_work() -> None:
    runtime = Runtime()
    runtime.close()
    runtime.close()  # idempotent
    with pytest.raises(durable.ConfigurationError):
        runtime.start(greet, "late")


# ----------------------------------------------------------------------------- start


def test_start_returns_at_once_and_the_instance_progresses_without_wait() -> None:
    key = "bg"
    with Runtime() as runtime:
        iid = runtime.start(block_then_event, key)
        _eventually(lambda: RUNS[key] == 1, "the activity to start")
        assert runtime.status(iid).status == Status.RUNNING  # start did not wait for it
        _gate(key).set()
        _eventually(
            lambda: any(isinstance(e, ActivityCompleted) for e in runtime.history(iid)),
            "the activity's result to be recorded, with nobody in wait()",
        )
        runtime.raise_event(iid, "go", 7)
        _eventually(lambda: runtime.status(iid).status == Status.COMPLETED, "the instance to end")
        assert runtime.status(iid).output == ["bg done", 7]


def test_start_is_idempotent_on_instance_id(rt: Runtime) -> None:
    iid = rt.start(greet, "idem", instance_id="order-1")
    assert iid == "order-1"
    assert rt.start(greet, "idem", instance_id="order-1") == "order-1"
    assert rt.wait(iid, timeout=WAIT).count == 1
    assert rt.start(greet, "idem", instance_id="order-1") == "order-1"  # after the end too
    assert RUNS["greet:idem"] == 1
    with pytest.raises(InstanceExistsError):
        rt.start(greet, "other input", instance_id="order-1")
    with pytest.raises(InstanceExistsError):
        rt.start(fail, 1, instance_id="order-1")


def test_start_by_registered_name(rt: Runtime) -> None:
    iid = rt.start("rt_greet", "by-name")
    assert rt.wait(iid, timeout=WAIT).text == "hello by-name"


def test_start_rejects_unknown_workflow_and_bad_ids(rt: Runtime) -> None:
    with pytest.raises(durable.UnknownWorkflowError):
        rt.start("rt_no_such_workflow")
    with pytest.raises(ValueError):
        rt.start(greet, "x", instance_id="  ")
    with pytest.raises(InstanceNotFoundError):
        rt.status("nope")
    with pytest.raises(InstanceNotFoundError):
        rt.raise_event("nope", "go")


# ----------------------------------------------------------------------------- events, status


def test_event_raised_before_the_workflow_waits_is_buffered(rt: Runtime) -> None:
    key = "early-event"
    iid = rt.start(block_then_event, key)
    _eventually(lambda: RUNS[key] == 1, "the activity to start")
    rt.raise_event(iid, "go", {"early": True})  # the workflow is still in its activity
    _gate(key).set()
    assert rt.wait(iid, timeout=WAIT) == [f"{key} done", {"early": True}]


def test_status_model_fields(rt: Runtime) -> None:
    before = datetime.now().astimezone()
    iid = rt.start(cancellable, "status")
    _eventually(lambda: rt.status(iid).custom_status == "waiting", "the custom status")
    status = rt.status(iid)
    assert status.instance_id == iid
    assert status.workflow == "rt_cancellable"
    assert status.status == Status.RUNNING
    assert status.input == "status"
    assert status.output is None and status.error is None
    assert status.created_at >= before - timedelta(seconds=1)
    assert status.updated_at >= status.created_at
    rt.terminate(iid, "done with it")
    with pytest.raises(WorkflowFailed):
        rt.wait(iid, timeout=WAIT)
    done = rt.status(iid)
    assert done.status == Status.TERMINATED
    assert done.updated_at >= status.updated_at
    assert set(type(done).model_fields) >= {
        "instance_id",
        "workflow",
        "status",
        "input",
        "output",
        "error",
        "custom_status",
        "created_at",
        "updated_at",
    }


def test_status_of_a_completed_and_a_failed_instance(rt: Runtime) -> None:
    ok = rt.start(greet, "status-ok")
    bad = rt.start(fail, 3)
    rt.wait(ok, timeout=WAIT)
    with pytest.raises(WorkflowFailed):
        rt.wait(bad, timeout=WAIT)
    assert rt.status(ok).output == {"text": "hello status-ok", "count": 1}
    error = rt.status(bad).error
    assert error is not None
    assert error.type.endswith("PaymentRejected")
    assert "3 is too much" in error.message


# ----------------------------------------------------------------------------- failure outcomes


def test_wait_raises_workflow_failed_with_the_original_exception(rt: Runtime) -> None:
    iid = rt.start(fail, 1000)
    with pytest.raises(WorkflowFailed) as failed:
        rt.wait(iid, timeout=WAIT)
    assert failed.value.status == "FAILED"
    assert isinstance(failed.value.cause, PaymentRejected)
    assert str(failed.value.cause) == "1000 is too much"


def test_cancel_lets_the_workflow_clean_up_then_ends_canceled(rt: Runtime) -> None:
    iid = rt.start(cancellable, "cancel")
    _eventually(lambda: rt.status(iid).custom_status == "waiting", "the workflow to wait")
    rt.cancel(iid, "user changed their mind")
    with pytest.raises(WorkflowFailed) as failed:
        rt.wait(iid, timeout=WAIT)
    assert failed.value.status == "CANCELED"
    assert isinstance(failed.value.cause, Cancelled)
    assert RUNS["cancel:cleanup"] == 1  # the cleanup activity ran after the cancel
    status = rt.status(iid)
    assert (status.status, status.custom_status) == (Status.CANCELED, "cleaning up")
    history = rt.history(iid)
    assert _kinds(history)[-5:] == [
        "CancelRequested",
        "StatusSet",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCanceled",
    ]
    assert any(isinstance(e, CancelRequested) and "changed" in e.reason for e in history)


def test_a_workflow_may_swallow_cancellation(rt: Runtime) -> None:
    iid = rt.start(cancel_swallowed)
    rt.cancel(iid, "enough")
    assert rt.wait(iid, timeout=WAIT) == "stopped: enough"
    assert rt.status(iid).status == Status.COMPLETED


def test_terminate_ends_at_once_without_running_more_code(rt: Runtime) -> None:
    iid = rt.start(cancellable, "terminate")
    _eventually(lambda: rt.status(iid).custom_status == "waiting", "the workflow to wait")
    rt.terminate(iid, "operator")
    with pytest.raises(WorkflowFailed) as failed:
        rt.wait(iid, timeout=WAIT)
    assert failed.value.status == "TERMINATED"
    assert RUNS["terminate:cleanup"] == 0
    last = rt.history(iid)[-1]
    assert isinstance(last, WorkflowTerminated) and last.reason == "operator"
    with pytest.raises(durable.InstanceFinishedError):
        rt.raise_event(iid, "never")


# ----------------------------------------------------------------------------- children


def test_child_results_and_exceptions_reach_the_parent(rt: Runtime) -> None:
    iid = rt.start(parent, [3, 1, 2])
    assert rt.wait(iid, timeout=WAIT) == {
        "results": [30, 10, 20],
        "child_error": "-1 is too much",
    }
    bad_child = rt.status(f"{iid}-bad-child")
    assert (bad_child.status, bad_child.parent_id) == (Status.FAILED, iid)
    children = [e for e in rt.history(iid) if e.kind == "ChildScheduled"]
    assert len(children) == 4
    for event in children:
        assert rt.status(event.child_id).status in (Status.COMPLETED, Status.FAILED)


# ----------------------------------------------------------------------------- retries, timeouts


def _assert_delays(retries: list[ActivityRetryScheduled], delays: list[timedelta]) -> None:
    assert len(retries) == len(delays)
    for retry, delay in zip(retries, delays, strict=True):
        assert delay - timedelta(seconds=1) < retry.fire_at - retry.timestamp <= delay


def test_retries_are_durable_timers_in_the_history(rt: Runtime) -> None:
    key = "retry-ok"
    iid = rt.start(retrying, key)
    assert rt.wait(iid, timeout=WAIT) == "ok after 3"
    assert RUNS[key] == 3
    history = rt.history(iid)
    retries = [e for e in history if isinstance(e, ActivityRetryScheduled)]
    assert [r.attempt for r in retries] == [1, 2]
    assert [r.error.type for r in retries] == ["ConnectionError", "ConnectionError"]
    # Attempt n+1 starts initial_interval * backoff**(n-1) after attempt n failed
    # (the failure happened a moment before the step that recorded it).
    _assert_delays(retries, [timedelta(minutes=1), timedelta(minutes=2)])
    attempts = [e for e in history if isinstance(e, ActivityScheduled)]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    for retry, next_attempt in zip(retries, attempts[1:], strict=True):
        assert next_attempt.timestamp >= retry.fire_at  # time skipped to each retry timer


def test_when_attempts_run_out_the_last_exception_is_raised(rt: Runtime) -> None:
    key = "retry-exhausted"
    iid = rt.start(retry_exhausted, key)
    with pytest.raises(WorkflowFailed) as failed:
        rt.wait(iid, timeout=WAIT)
    assert isinstance(failed.value.cause, ConnectionError)
    assert str(failed.value.cause) == f"attempt 3 of {key} failed"
    assert RUNS[key] == 3
    history = rt.history(iid)
    retries = [e for e in history if isinstance(e, ActivityRetryScheduled)]
    _assert_delays(retries, [timedelta(seconds=30), timedelta(seconds=90)])
    assert [e.kind for e in history if e.kind == "ActivityFailed"] == ["ActivityFailed"]


def test_activity_timeout_fails_the_attempt_and_retries(rt: Runtime) -> None:
    key = "timeout-retry"
    iid = rt.start(timeout_retry, key)
    assert rt.wait(iid, timeout=WAIT) == "attempt 2"
    (retry,) = [e for e in rt.history(iid) if isinstance(e, ActivityRetryScheduled)]
    assert retry.error.type == "TimeoutError"
    assert "rt.slow_first" in retry.error.message


def test_activity_timeout_without_retry_fails_the_workflow(rt: Runtime) -> None:
    key = "timeout-fail"
    iid = rt.start(timeout_no_retry, key)
    with pytest.raises(WorkflowFailed) as failed:
        rt.wait(iid, timeout=WAIT)
    assert isinstance(failed.value.cause, TimeoutError)
    _gate(key).set()
    # The late result of the timed-out attempt changes nothing.
    time.sleep(0.1)
    assert rt.status(iid).status == Status.FAILED
    assert not any(isinstance(e, ActivityCompleted) for e in rt.history(iid))


def test_activity_timeout_counts_from_the_start_of_the_attempt() -> None:
    # One worker: the third attempt waits ~0.3s in the queue, then runs 0.15s of its 0.4s.
    with Runtime(time_skipping=True, max_workers=1) as runtime:
        iid = runtime.start(naps_with_timeout, 3)
        assert runtime.wait(iid, timeout=WAIT) == [0.15, 0.15, 0.15]


# ----------------------------------------------------------------------------- time skipping


def test_without_time_skipping_timers_wait_on_the_real_clock() -> None:
    started = time.monotonic()
    slept = durable.run(short_sleep)
    assert 0.2 <= slept < 10
    assert time.monotonic() - started >= 0.2


def test_time_never_skips_while_an_activity_runs(rt: Runtime) -> None:
    # A 20 ms activity against a 1 s timer: under time skipping the activity must
    # still win every round, because time moves only when no activity is running.
    iid = rt.start(activity_vs_timer, 10)
    assert rt.wait(iid, timeout=WAIT) == ["activity"] * 10


def test_time_skipping_runs_the_remind_flow_with_26_virtual_hours(rt: Runtime) -> None:
    iid = rt.start(timed_reminder, "remind")
    started, ended = map(datetime.fromisoformat, rt.wait(iid, timeout=WAIT))
    elapsed = ended - started
    assert timedelta(hours=26) <= elapsed < timedelta(hours=26, minutes=1)
    assert RUNS["remind"] == 2
    fired = [e.timestamp for e in rt.history(iid) if isinstance(e, TimerFired)]
    assert fired[1] - fired[0] >= timedelta(days=1)


def test_time_stands_still_until_someone_waits(rt: Runtime) -> None:
    iid = rt.start(event_or_timeout)
    _eventually(lambda: rt.status(iid).status == Status.RUNNING, "the first step")
    time.sleep(0.2)  # the hour-long timer must not fire while nobody is in wait()
    rt.raise_event(iid, "go")
    assert rt.wait(iid, timeout=WAIT) == "event"


def test_without_an_event_time_skips_to_the_timer(rt: Runtime) -> None:
    iid = rt.start(event_or_timeout)
    assert rt.wait(iid, timeout=WAIT) == "timeout"


def test_wait_times_out_when_nothing_can_progress(rt: Runtime) -> None:
    iid = rt.start(cancellable, "forever")
    with pytest.raises(TimeoutError):
        rt.wait(iid, timeout=0.3)


# ----------------------------------------------------------------------------- continue-as-new


def test_continue_as_new_keeps_the_id_and_history_starts_again(rt: Runtime) -> None:
    iid = rt.start(counter_chain, 0)
    assert rt.wait(iid, timeout=WAIT) == 3
    history = rt.history(iid)
    first = history[0]
    assert isinstance(first, WorkflowStarted)
    assert (first.run, first.input, first.seq) == (4, 3, 1)
    assert _kinds(history) == [
        "WorkflowStarted",
        "TimerScheduled",
        "TimerFired",
        "WorkflowCompleted",
    ]
    assert rt.status(iid).run == 4


# ----------------------------------------------------------------------------- recovery


def test_a_new_runtime_resumes_unfinished_instances(db: str) -> None:
    key = "resume"
    with Runtime(db) as first:
        iid = first.start(two_steps, key)
        _eventually(
            lambda: any(e.kind == "EventWaitStarted" for e in first.history(iid)),
            "the first activity to be recorded",
        )
        assert first.status(iid).status == Status.RUNNING
    with Runtime(db) as second:
        second.raise_event(iid, "next", "payload")
        assert second.wait(iid, timeout=WAIT) == [1, "payload", 1]
    assert (RUNS[f"{key}:a"], RUNS[f"{key}:b"]) == (1, 1)  # nothing recorded ran again


def test_an_activity_in_flight_when_the_runtime_stopped_runs_again(db: str) -> None:
    key = "in-flight"
    first = Runtime(db)
    iid = first.start(block_then_event, key)
    _eventually(lambda: RUNS[key] == 1, "the activity to start")
    first.close()  # abandons the attempt: its result is never recorded
    _gate(key).set()
    with Runtime(db) as second:
        second.raise_event(iid, "go", 1)
        assert second.wait(iid, timeout=WAIT) == [f"{key} done", 1]
    assert RUNS[key] == 2  # at least once: the interrupted attempt ran again
    store = SQLiteStore(db.removeprefix("sqlite:///"))
    try:
        completions = [e for e in store.history(iid) if isinstance(e, ActivityCompleted)]
        assert len(completions) == 1  # ...but its result was recorded once
    finally:
        store.close()


def test_a_new_runtime_retries_stuck_instances_and_keeps_their_events(db: str) -> None:
    key = "stuck"
    with Runtime(db, workflows=(STUCK_V1,)) as original:
        iid = original.start(STUCK_V1, key)
        _eventually(
            lambda: any(e.kind == "EventWaitStarted" for e in original.history(iid)),
            "the workflow to wait",
        )
    with Runtime(db, workflows=(STUCK_CHANGED,)) as changed:  # a bad deploy
        with pytest.raises(WorkflowFailed) as failed:
            changed.wait(iid, timeout=WAIT)
        assert failed.value.status == "STUCK"
        assert isinstance(failed.value.cause, NonDeterminismError)
        changed.raise_event(iid, "go", "kept")  # accepted and kept for the fixed code
        time.sleep(0.1)
        assert changed.status(iid).status == Status.STUCK
    with Runtime(db, workflows=(STUCK_V1,)) as fixed:
        assert fixed.wait(iid, timeout=WAIT) == [1, "kept"]
    assert RUNS[f"{key}:first"] == 1
    assert RUNS[key] == 0  # the changed code's activity never ran


def test_an_instance_whose_code_is_missing_is_stuck_until_a_runtime_has_it(db: str) -> None:
    key = "missing-code"
    with Runtime(db, workflows=(UNREGISTERED,)) as original:
        iid = original.start(UNREGISTERED, key)
        _eventually(
            lambda: any(e.kind == "EventWaitStarted" for e in original.history(iid)),
            "the workflow to wait",
        )
    with Runtime(db) as without_code:
        with pytest.raises(WorkflowFailed) as failed:
            without_code.wait(iid, timeout=WAIT)
        assert failed.value.status == "STUCK"
        assert isinstance(failed.value.cause, durable.UnknownWorkflowError)
        without_code.raise_event(iid, "go", 2)
    with Runtime(db, workflows=(UNREGISTERED,)) as with_code:
        assert with_code.wait(iid, timeout=WAIT) == [1, 2]


def test_time_skipping_continues_after_a_restart(db: str) -> None:
    with Runtime(db, time_skipping=True) as first:
        iid = first.start(timed_reminder, "restart-skip")
        _eventually(lambda: first.status(iid).wake_at is not None, "the first timer")
    with Runtime(db, time_skipping=True) as second:
        started, ended = map(datetime.fromisoformat, second.wait(iid, timeout=WAIT))
    assert timedelta(hours=26) <= ended - started < timedelta(hours=26, minutes=1)


# ----------------------------------------------------------------------------- robustness


def test_a_failing_step_listener_is_dropped_and_the_runtime_goes_on(rt: Runtime) -> None:
    """A progress view whose terminal went away (rich raises SystemExit) must not stop work."""
    calls: list[str] = []

    def broken_listener(instance_id: str, decision: Any) -> None:
        calls.append(instance_id)
        raise SystemExit(1)

    rt.add_listener(broken_listener)
    first = rt.start(greet, "listener-1")
    assert rt.wait(first, timeout=30) == Greeting(text="hello listener-1", count=1)
    second = rt.start(greet, "listener-2")
    assert rt.wait(second, timeout=30) == Greeting(text="hello listener-2", count=1)
    assert calls == [first]


# ----------------------------------------------------------------------------- early start


@activity(name="rt.echo")
def echo(key: str) -> str:
    RUNS[key] += 1
    return key


@workflow(name="rt_by_the_clock")
def by_the_clock(ctx: Context, args: list[str]) -> Generator[Any, Any, str]:
    """Calls ``early`` or ``late`` as its first activity (the same task id either way),
    depending on the recorded time of its first step."""
    key, deadline = args
    branch = "early" if ctx.now() < datetime.fromisoformat(deadline) else "late"
    result: str = yield ctx.call(echo, f"{key}:{branch}")
    return result


class CommitFailsAfterStart(SQLiteStore):
    """A SQLite store whose first commit that schedules activities fails at COMMIT (a full
    disk) after the Runtime started them, once their outcome is in, and after moving the
    runtime's virtual clock past ``deadline``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.runtime: Runtime | None = None
        self.deadline = datetime.now(UTC)
        self.failed = 0

    def commit(
        self,
        decision: Any,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        def ready() -> None:
            assert on_ready is not None
            on_ready()
            if self.failed == 0 and decision.dispatch:
                self.failed += 1
                key = decision.dispatch[0].input["args"][0]
                _eventually(lambda: RUNS[key] == 1, "the early-started attempt to run")
                time.sleep(0.05)  # its outcome is handed to the runtime
                assert self.runtime is not None and isinstance(self.runtime.clock, VirtualClock)
                self.runtime.clock.advance_to(self.deadline + timedelta(minutes=1))
                raise sqlite3.OperationalError("database or disk is full")

        return super().commit(
            decision,
            expected_version=expected_version,
            on_ready=None if on_ready is None else ready,
        )


def test_attempts_started_for_a_commit_that_failed_are_disowned(tmp_path: Path) -> None:
    """The Runtime starts a step's activities before its commit is on disk. When that commit
    then fails, the outcome of what it started must not be taken for whatever the retried
    step schedules under the same task id: here ``late``, not ``early``."""
    store = CommitFailsAfterStart(tmp_path / "early.db")
    with Runtime(store, time_skipping=True) as rt:
        store.runtime = rt
        store.deadline = rt.clock.now() + timedelta(hours=1)
        iid = rt.start(by_the_clock, ["disowned", store.deadline.isoformat()])
        assert rt.wait(iid, timeout=WAIT) == "disowned:late"
        history = rt.history(iid)
    assert store.failed == 1
    assert (RUNS["disowned:early"], RUNS["disowned:late"]) == (1, 1)
    assert _kinds(history).count("ActivityScheduled") == 1
    assert _kinds(history).count("ActivityCompleted") == 1
    store.close()


# ----------------------------------------------------------------------------- activity_info


_seen_infos: list[durable.ActivityInfo] = []


@activity(
    name="rt.records_info",
    retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1)),
)
def records_info(fail_times: int) -> str:
    info = durable.activity_info()
    _seen_infos.append(info)
    if info.attempt <= fail_times:
        raise RuntimeError(f"attempt {info.attempt} fails")
    return info.idempotency_key


@workflow(name="rt_uses_activity_info")
def uses_activity_info(ctx: Context, fail_times: int) -> Generator[Any, Any, list[str]]:
    first = yield ctx.call(records_info, fail_times)
    second = yield ctx.call(records_info, 0)
    return [first, second]


def test_activity_info_gives_a_key_stable_across_retries_and_distinct_per_call(
    rt: Runtime,
) -> None:
    _seen_infos.clear()
    iid = rt.start(uses_activity_info, 2, instance_id="info-1")
    first, second = rt.wait(iid, timeout=30)
    assert first == "info-1/1/1"
    assert second == "info-1/1/2"
    assert [(i.task_id, i.attempt) for i in _seen_infos] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert {i.instance_id for i in _seen_infos} == {"info-1"}
    assert {i.activity for i in _seen_infos} == {"rt.records_info"}


def test_activity_info_outside_an_activity_is_a_clear_error() -> None:
    with pytest.raises(durable.DurableError, match="only available inside a running activity"):
        durable.activity_info()
