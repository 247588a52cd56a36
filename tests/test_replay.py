"""Engine tests: build histories (or drive the pure engine step by step) and assert its decisions.

No store, no runtime, no threads: ``replay(workflow, history, inbox, now)`` is
pure, so every test here is exact and fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
import threading
from collections.abc import Generator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from durable import (
    ActivityError,
    Cancelled,
    Context,
    NonDeterminismError,
    RetryPolicy,
    SerializationError,
    Status,
    WorkflowFailed,
    activity,
    workflow,
)
from durable.history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityRetryScheduled,
    ActivityScheduled,
    ChildScheduled,
    Event,
    EventWaitStarted,
    Message,
    PatchMarker,
    SideEffectRecorded,
    StatusSet,
    TimerScheduled,
    WorkflowContinuedAsNew,
    dump_history,
)
from durable.replay import MAX_NEW_EVENTS_PER_STEP, Decision, InvalidHistoryError, replay
from durable.runtime.activity import run_activity
from durable.testing import (
    EPOCH,
    activity_completed,
    activity_result,
    activity_scheduled,
    build_history,
    cancel_message,
    child_result,
    child_scheduled,
    event_message,
    event_wait_started,
    patch_marker,
    replay_history,
    side_effect,
    started,
    status_set,
    terminate_message,
    timer_fired,
    timer_scheduled,
    workflow_completed,
    workflow_failed,
)
from durable.workflow import Workflow

IID = "wf-1"
T0 = EPOCH


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Sim:
    """Drives the pure engine by hand: each step's new events are appended to the history."""

    def __init__(self, wf: Workflow[Any, Any], input: Any = None, *, instance_id: str = IID):
        self.wf = wf
        self.instance_id = instance_id
        self.history: list[Event] = build_history(started(wf, input))

    def step(self, *inbox: Message, now: datetime = T0) -> Decision:
        decision = replay(self.wf, self.history, list(inbox), now, instance_id=self.instance_id)
        self.history.extend(decision.events)
        return decision

    def run(self, decision: Decision, now: datetime = T0) -> list[Message]:
        """Run every dispatched activity for real, returning the result messages."""
        return [run_activity(work, now=lambda: now) for work in decision.dispatch]


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def final_replay(sim: Sim) -> Decision:
    """Replay the whole recorded history once more: it must add nothing."""
    decision = replay(sim.wf, sim.history, [], at(10**6), instance_id=sim.instance_id)
    assert decision.stuck is None
    assert decision.events == []
    return decision


# ----------------------------------------------------------------------------- activities


class User(BaseModel):
    name: str
    visits: int = 0


@dataclasses.dataclass
class Point:
    x: int
    y: int


class OutOfStock(Exception):
    pass


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Opaque:
    """A value JSON cannot carry."""

    def __init__(self, value: int) -> None:
        self.value = value


@activity(name="t_r_add")
def add(a: int, b: int) -> int:
    return a + b


@activity(name="t_r_greet")
def greet(name: str, *, greeting: str = "hi") -> str:
    return f"{greeting} {name}"


@activity(name="t_r_other")
def other() -> str:
    return "other"


@activity(name="t_r_visit")
def visit(user: User) -> User:
    return user.model_copy(update={"visits": user.visits + 1})


@activity(name="t_r_move")
def move(p: Point, dx: int) -> Point:
    return Point(p.x + dx, p.y)


@activity(name="t_r_opaque", codec="pickle")
def make_opaque(value: int) -> Opaque:
    return Opaque(value)


@activity(name="t_r_out_of_stock")
def out_of_stock(item: str) -> None:
    raise OutOfStock(f"no {item}")


@activity(name="t_r_unpicklable")
def raise_unpicklable() -> None:
    raise Unpicklable("cannot travel")


@activity(name="t_r_own_retry", retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(0)))
def own_retry() -> str:
    return "ok"


# ----------------------------------------------------------------------------- ctx.call


@workflow(name="t_r_call")
def call_wf(ctx: Context) -> Generator[Any, Any, str]:
    text: str = yield ctx.call(greet, "ada", greeting="hello", timeout=5, name="Greet")
    return text


def test_call_records_the_command_and_dispatches_one_attempt() -> None:
    sim = Sim(call_wf)
    d = sim.step()
    assert d.status == Status.RUNNING
    assert kinds(d.events) == ["ActivityScheduled"]
    scheduled = d.events[0]
    assert isinstance(scheduled, ActivityScheduled)
    assert (scheduled.seq, scheduled.task_id, scheduled.activity) == (2, 1, "t_r_greet")
    assert scheduled.input == {"args": ["ada"], "kwargs": {"greeting": "hello"}}
    assert scheduled.name == "Greet"
    assert scheduled.timeout == 5.0
    assert [(w.task_id, w.attempt, w.activity, w.timeout) for w in d.dispatch] == [
        (1, 1, "t_r_greet", 5.0)
    ]
    assert d.pending == d.dispatch
    assert d.wake_at is None
    assert d.waiting_on == ["Greet (activity 't_r_greet')"]


def test_call_result_completes_the_workflow_and_replays_to_the_same_end() -> None:
    sim = Sim(call_wf)
    results = sim.run(sim.step())
    d = sim.step(*results)
    assert kinds(d.events) == ["ActivityCompleted", "WorkflowCompleted"]
    assert d.status == Status.COMPLETED
    assert d.output == "hello ada"
    assert d.consumed == [results[0].id]
    assert d.dispatch == [] and d.pending == []
    end = final_replay(sim)
    assert (end.status, end.output) == (Status.COMPLETED, "hello ada")


def test_a_step_with_nothing_new_decides_nothing() -> None:
    sim = Sim(call_wf)
    sim.step()
    again = sim.step(now=at(3600))
    assert again.events == [] and again.dispatch == []
    # still outstanding: a driver that crashed meanwhile runs it again
    assert [w.task_id for w in again.pending] == [1]


def test_duplicate_and_stale_results_are_consumed_and_ignored() -> None:
    sim = Sim(events_wf)
    sim.step()
    first = activity_result(1, 3)
    dup = activity_result(1, 99)
    stale_run = activity_result(1, 98, run=7)
    d = sim.step(stale_run, first, dup)
    assert kinds(d.events) == ["ActivityCompleted", "EventWaitStarted"]
    assert isinstance(d.events[0], ActivityCompleted) and d.events[0].result == 3
    assert sorted(d.consumed) == sorted([first.id, dup.id, stale_run.id])


# ----------------------------------------------------------------------------- retries


@workflow(name="t_r_retry")
def retry_wf(ctx: Context) -> Generator[Any, Any, str]:
    policy = RetryPolicy(
        max_attempts=4,
        initial_interval=timedelta(seconds=10),
        backoff=3.0,
        max_interval=timedelta(seconds=60),
    )
    try:
        yield ctx.call(out_of_stock, "tea", retry=policy)
    except OutOfStock as exc:
        return f"gave up: {exc}"
    return "unreachable"


def test_retries_are_durable_timers_with_backoff_capped_by_max_interval() -> None:
    sim = Sim(retry_wf)
    d = sim.step()
    assert [w.attempt for w in d.dispatch] == [1]

    now = T0
    expected_delays = [10, 30, 60]  # 10 * 3**0, 10 * 3**1, min(10 * 3**2, 60)
    for attempt, delay in enumerate(expected_delays, start=1):
        failure = activity_result(
            1, error=OutOfStock(f"attempt {attempt}"), attempt=attempt, at=now
        )
        d = sim.step(failure, now=now)
        assert kinds(d.events) == ["ActivityRetryScheduled"]
        retry = d.events[0]
        assert isinstance(retry, ActivityRetryScheduled)
        assert retry.attempt == attempt
        assert retry.fire_at == now + timedelta(seconds=delay)
        assert d.wake_at == retry.fire_at
        assert d.dispatch == [] and d.pending == []  # nothing runs until the retry timer is due

        early = sim.step(now=retry.fire_at - timedelta(seconds=1))
        assert early.events == [] and early.dispatch == []

        now = retry.fire_at
        d = sim.step(now=now)
        assert kinds(d.events) == ["ActivityScheduled"]
        assert isinstance(d.events[0], ActivityScheduled) and d.events[0].attempt == attempt + 1
        assert [(w.task_id, w.attempt) for w in d.dispatch] == [(1, attempt + 1)]

    last = activity_result(1, error=OutOfStock("the last one"), attempt=4, at=now)
    d = sim.step(last, now=now)
    assert kinds(d.events) == ["ActivityFailed", "WorkflowCompleted"]
    assert d.output == "gave up: the last one"  # the LAST attempt's exception, not the first
    final_replay(sim)


def test_a_result_of_an_attempt_that_already_failed_is_ignored() -> None:
    sim = Sim(retry_wf)
    sim.step()
    sim.step(activity_result(1, error=OutOfStock("x"), attempt=1))
    late = activity_result(1, "late success of attempt 1", attempt=1)
    d = sim.step(late)
    assert d.events == [] and d.consumed == [late.id]


def test_a_late_result_of_an_earlier_attempt_is_ignored() -> None:
    sim = Sim(wf_policy_wf, "workflow")  # zero-delay retries
    sim.step()
    d = sim.step(activity_result(1, error=OutOfStock("x"), attempt=1))
    assert [(w.task_id, w.attempt) for w in d.dispatch] == [(1, 2)]
    late = activity_result(1, "attempt 1 finished after all", attempt=1)
    d = sim.step(late)
    assert d.events == [] and d.consumed == [late.id]
    assert [(w.task_id, w.attempt) for w in d.pending] == [(1, 2)]


def test_every_attempt_carries_when_it_was_scheduled() -> None:
    """Drivers tell a lost attempt by its age: each ``ActivityWork`` says when its
    ``ActivityScheduled`` was recorded, whether just decided or found in the history."""
    sim = Sim(retry_wf)
    first = sim.step(now=at(5))
    [work] = first.dispatch
    assert work.scheduled_at == at(5) == first.events[-1].timestamp
    assert [w.scheduled_at for w in sim.step(now=at(7)).pending] == [at(5)]  # from history
    sim.step(activity_result(1, error=OutOfStock("x"), attempt=1), now=at(8))
    retried = sim.step(now=at(18))  # the 10 s retry delay is over
    assert [(w.attempt, w.scheduled_at) for w in retried.dispatch] == [(2, at(18))]
    again = replay(sim.wf, sim.history, [], at(30), instance_id=IID)
    assert [(w.attempt, w.scheduled_at) for w in again.pending] == [(2, at(18))]


def test_a_lost_attempt_dispatched_again_is_recorded_while_it_is_still_in_flight() -> None:
    """A driver's ``AttemptLost`` note becomes ``ActivityRedispatched``: the attempt's
    dispatch time and count move on (replayed alike); a note on an attempt that is no
    longer the one in flight is consumed and changes nothing."""
    from durable.history import AttemptLost

    sim = Sim(retry_wf)
    sim.step(now=at(5))
    lost = AttemptLost(task_id=1, run=1, attempt=1, received_at=at(20))
    d = sim.step(lost, now=at(20))
    assert kinds(d.events) == ["ActivityRedispatched"] and d.consumed == [lost.id]
    assert d.dispatch == []  # the driver that noted it dispatches it
    [work] = d.pending
    assert (work.attempt, work.scheduled_at, work.dispatched_at, work.dispatches) == (
        1,
        at(5),
        at(20),
        2,
    )
    replayed = replay(sim.wf, sim.history, [], at(30), instance_id=IID)
    assert [(w.dispatched_at, w.dispatches) for w in replayed.pending] == [(at(20), 2)]
    for stale in (
        AttemptLost(task_id=1, run=1, attempt=2, received_at=at(21)),  # not that attempt
        AttemptLost(task_id=1, run=2, attempt=1, received_at=at(21)),  # another run
        AttemptLost(task_id=9, run=1, attempt=1, received_at=at(21)),  # no such task
    ):
        d = sim.step(stale, now=at(21))
        assert d.events == [] and d.consumed == [stale.id]
    failed = sim.step(activity_result(1, error=OutOfStock("x"), attempt=1, at=at(22)), now=at(22))
    assert kinds(failed.events) == ["ActivityRetryScheduled"]  # attempt 2 is due at 32
    backoff = sim.step(AttemptLost(task_id=1, run=1, attempt=1, received_at=at(23)), now=at(23))
    assert backoff.events == []  # waiting to retry: no attempt is in flight
    retried = sim.step(now=at(32))
    assert [(w.attempt, w.dispatched_at, w.dispatches) for w in retried.dispatch] == [
        (2, at(32), 1)  # a new attempt starts its own count
    ]
    late = sim.step(AttemptLost(task_id=1, run=1, attempt=1, received_at=at(33)), now=at(33))
    assert late.events == []  # attempt 2 is the one in flight now
    final_replay(sim)


def test_retry_policy_delays_and_filters() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=2), backoff=3.0, max_interval=timedelta(seconds=10)
    )
    assert [policy.delay(n).total_seconds() for n in (1, 2, 3)] == [2, 6, 10]
    jittery = RetryPolicy(initial_interval=timedelta(seconds=100), jitter=0.2)
    spread = [jittery.delay(1, jitter_key=f"k{i}").total_seconds() for i in range(20)]
    assert all(80 <= s <= 120 for s in spread) and len(set(spread)) > 1
    assert jittery.delay(1, jitter_key="k1") == jittery.delay(1, jitter_key="k1")
    filtered = RetryPolicy(max_attempts=5, non_retryable=(LookupError, "OutOfStock"))
    assert not filtered.allows_retry(1, ["KeyError", "LookupError", "Exception"])
    assert not filtered.allows_retry(1, [f"{__name__}.OutOfStock", "Exception"])
    assert filtered.allows_retry(4, ["ValueError"]) and not filtered.allows_retry(5, ["ValueError"])
    endless = RetryPolicy(max_attempts=10**6)  # no max_interval: delays still stay in range
    assert endless.delay(100) == endless.delay(5000) == timedelta(days=365 * 100)


@workflow(name="t_r_non_retryable")
def non_retryable_wf(ctx: Context) -> Generator[Any, Any, str]:
    policy = RetryPolicy(max_attempts=5, non_retryable=(OutOfStock,))
    try:
        yield ctx.call(out_of_stock, "tea", retry=policy)
    except OutOfStock:
        return "failed fast"
    return "unreachable"


def test_non_retryable_errors_fail_at_once() -> None:
    sim = Sim(non_retryable_wf)
    d = sim.step(*sim.run(sim.step()))
    assert kinds(d.events) == ["ActivityFailed", "WorkflowCompleted"]
    assert d.output == "failed fast"


@workflow(name="t_r_no_policy")
def no_policy_wf(ctx: Context) -> Generator[Any, Any, None]:
    yield ctx.call(out_of_stock, "tea")


@workflow(name="t_r_wf_policy", retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(0)))
def wf_policy_wf(ctx: Context, which: str) -> Generator[Any, Any, None]:
    if which == "workflow":
        yield ctx.call(out_of_stock, "tea")
    elif which == "activity":
        yield ctx.call(own_retry)
    else:
        yield ctx.call(out_of_stock, "tea", retry=RetryPolicy(max_attempts=1))


def test_without_any_policy_an_activity_is_attempted_once() -> None:
    sim = Sim(no_policy_wf)
    d = sim.step(*sim.run(sim.step()))
    assert kinds(d.events) == ["ActivityFailed", "WorkflowFailed"]
    assert d.status == Status.FAILED
    assert d.error is not None and d.error.type == f"{__name__}.OutOfStock"
    assert isinstance(d.error.to_exception(), OutOfStock)


@pytest.mark.parametrize(("which", "attempts"), [("workflow", 3), ("activity", 2), ("call", 1)])
def test_policy_precedence_call_over_activity_over_workflow(which: str, attempts: int) -> None:
    sim = Sim(wf_policy_wf, which)
    d = sim.step()
    for attempt in range(1, 10):
        assert [w.attempt for w in d.dispatch] == [attempt]
        failure = activity_result(1, error=OutOfStock("x"), attempt=attempt)
        d = sim.step(failure)
        if d.status != Status.RUNNING:
            break
        assert kinds(d.events) == ["ActivityRetryScheduled", "ActivityScheduled"]  # delay 0
    assert attempt == attempts
    assert d.status == Status.FAILED


# ----------------------------------------------------------------------------- timers


@workflow(name="t_r_sleep")
def sleep_wf(ctx: Context) -> Generator[Any, Any, str]:
    yield ctx.sleep(timedelta(hours=2), name="Wait two hours")
    yield ctx.sleep(30)  # plain seconds
    yield ctx.sleep_until(datetime(2030, 1, 2, tzinfo=T0.tzinfo))
    return ctx.now().isoformat()


def test_sleep_and_sleep_until_are_durable_timers() -> None:
    sim = Sim(sleep_wf)
    d = sim.step()
    assert kinds(d.events) == ["TimerScheduled"]
    timer = d.events[0]
    assert isinstance(timer, TimerScheduled)
    assert (timer.task_id, timer.fire_at, timer.name) == (1, at(7200), "Wait two hours")
    assert d.wake_at == at(7200)
    assert d.waiting_on == ["Wait two hours (timer (2:00:00))"]

    assert sim.step(now=at(7199)).events == []

    d = sim.step(now=at(7300))  # late wake-up: the next timer counts from the step's time
    assert kinds(d.events) == ["TimerFired", "TimerScheduled"]
    assert isinstance(d.events[1], TimerScheduled) and d.events[1].fire_at == at(7330)

    d = sim.step(now=at(7330))
    assert kinds(d.events) == ["TimerFired", "TimerScheduled"]
    assert isinstance(d.events[1], TimerScheduled)
    assert d.events[1].fire_at == datetime(2030, 1, 2, tzinfo=T0.tzinfo)

    d = sim.step(now=at(86400))
    assert kinds(d.events) == ["TimerFired", "SideEffectRecorded", "WorkflowCompleted"]
    assert d.output == at(86400).isoformat()
    final_replay(sim)


@workflow(name="t_r_two_timers")
def two_timers_wf(ctx: Context) -> Generator[Any, Any, None]:
    long = ctx.sleep(20)
    short = ctx.sleep(10)
    yield ctx.any([long, short])
    yield ctx.sleep(5)  # counts from the step's time, not from when the timer was due


def test_overdue_timers_fire_in_one_step_in_order_of_their_due_time() -> None:
    sim = Sim(two_timers_wf)
    d = sim.step()
    assert d.wake_at == at(10)
    d = sim.step(now=at(100))
    assert kinds(d.events) == ["TimerFired", "TimerScheduled", "TimerFired"]
    assert [e.task_id for e in d.events] == [2, 3, 1]  # type: ignore[union-attr]
    assert isinstance(d.events[1], TimerScheduled) and d.events[1].fire_at == at(105)
    assert d.wake_at == at(105)


@workflow(name="t_r_many_timers")
def many_timers_wf(ctx: Context, n: int) -> Generator[Any, Any, int]:
    for _ in range(n):
        yield ctx.sleep(0)
    return n


def test_a_step_stops_at_the_event_limit_and_asks_to_be_called_again() -> None:
    sim = Sim(many_timers_wf, 1200)  # 2400 events, all due at once
    d = sim.step()
    assert d.more and d.status == Status.RUNNING
    assert MAX_NEW_EVENTS_PER_STEP <= len(d.events) < MAX_NEW_EVENTS_PER_STEP + 10
    d = sim.step()
    assert not d.more and (d.status, d.output) == (Status.COMPLETED, 1200)


# ----------------------------------------------------------------------------- events


@workflow(name="t_r_events")
def events_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    got = []
    got.append((yield ctx.call(add, 1, 2)))
    got.append((yield ctx.wait_for_event("approval")))
    got.append((yield ctx.wait_for_event("approval")))
    got.append((yield ctx.wait_for_event("other")))
    return got


def test_wait_for_event_delivers_raised_data() -> None:
    sim = Sim(events_wf)
    d = sim.step(*sim.run(sim.step()))
    assert kinds(d.events) == ["ActivityCompleted", "EventWaitStarted"]
    wait = d.events[1]
    assert isinstance(wait, EventWaitStarted) and (wait.event, wait.timeout_at) == (
        "approval",
        None,
    )
    assert d.wake_at is None and d.waiting_on == ["event 'approval'"]

    d = sim.step(event_message("approval", {"ok": True}), event_message("approval", "second"))
    assert kinds(d.events) == [
        "EventRaised",
        "EventWaitStarted",
        "EventRaised",
        "EventWaitStarted",
    ]
    d = sim.step(event_message("other", 3))
    assert d.output == [3, {"ok": True}, "second", 3]
    final_replay(sim)


def test_events_raised_before_the_wait_are_buffered_in_order() -> None:
    sim = Sim(events_wf)
    d0 = sim.step()
    early = [
        event_message("approval", "first", at=at(1)),
        event_message("other", "o", at=at(2)),
        event_message("approval", "second", at=at(3)),
    ]
    d = sim.step(*early, now=at(5))
    assert kinds(d.events) == ["EventRaised", "EventRaised", "EventRaised"]
    assert d.status == Status.RUNNING
    d = sim.step(*sim.run(d0), now=at(6))
    assert d.status == Status.COMPLETED
    assert d.output == [3, "first", "second", "o"]
    final_replay(sim)


@workflow(name="t_r_event_fifo")
def event_fifo_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    first = ctx.wait_for_event("go")
    second = ctx.wait_for_event("go")
    result: list[Any] = yield ctx.all([second, first])
    return result


def test_concurrent_waits_on_one_name_are_served_first_come_first_served() -> None:
    sim = Sim(event_fifo_wf)
    sim.step()
    d = sim.step(event_message("go", "a", at=at(1)), event_message("go", "b", at=at(2)), now=at(3))
    # ``second`` was scheduled first (it comes first in the all), so it gets the first event.
    assert d.output == ["a", "b"]


@workflow(name="t_r_event_or_timer")
def event_or_timer_wf(ctx: Context, again: str) -> Generator[Any, Any, Any]:
    wait = ctx.wait_for_event("approval")
    first = yield ctx.any([wait, ctx.sleep(60)])
    if first is wait:
        return ["in time", wait.result]
    yield ctx.call(greet, "escalate")  # the event may arrive meanwhile
    if again == "same task":
        return ["late", (yield wait)]
    return ["late", (yield ctx.wait_for_event("approval"))]


@pytest.mark.parametrize("again", ["same task", "new wait"])
def test_a_wait_that_lost_an_any_does_not_swallow_later_events(again: str) -> None:
    sim = Sim(event_or_timer_wf, again)
    sim.step()
    escalated = sim.step(now=at(60))
    assert [w.activity for w in escalated.dispatch] == ["t_r_greet"]
    d = sim.step(event_message("approval", "ok", at=at(61)), now=at(61))
    assert kinds(d.events) == ["EventRaised"]  # buffered: nothing waits for it now
    d = sim.step(*sim.run(escalated), now=at(62))
    assert d.output == ["late", "ok"]
    assert final_replay(sim).output == ["late", "ok"]


def test_a_wait_that_won_an_any_gets_the_event() -> None:
    sim = Sim(event_or_timer_wf, "new wait")
    sim.step()
    d = sim.step(event_message("approval", "ok", at=at(30)), now=at(30))
    assert d.output == ["in time", "ok"]


@workflow(name="t_r_event_timeout")
def event_timeout_wf(ctx: Context) -> Generator[Any, Any, str]:
    try:
        data = yield ctx.wait_for_event("approval", timeout=timedelta(hours=24))
    except TimeoutError:
        late = yield ctx.wait_for_event("approval")
        return f"timed out, then {late}"
    return f"approved {data}"


def test_wait_for_event_timeout_raises_timeout_error() -> None:
    sim = Sim(event_timeout_wf)
    d = sim.step()
    wait = d.events[0]
    assert isinstance(wait, EventWaitStarted) and wait.timeout_at == at(86400)
    assert d.wake_at == at(86400)
    d = sim.step(now=at(86400))
    assert kinds(d.events) == ["TimerFired", "EventWaitStarted"]
    assert d.events[0].task_id == 1  # type: ignore[union-attr]
    assert d.wake_at is None
    d = sim.step(event_message("approval", "late"), now=at(90000))
    assert d.output == "timed out, then late"
    final_replay(sim)


def test_an_event_in_time_cancels_the_timeout() -> None:
    sim = Sim(event_timeout_wf)
    sim.step()
    d = sim.step(event_message("approval", "yes", at=at(100)), now=at(86400))
    assert kinds(d.events) == ["EventRaised", "WorkflowCompleted"]
    assert d.output == "approved yes"


@workflow(name="t_r_event_in_time")
def event_in_time_wf(ctx: Context) -> Generator[Any, Any, Any]:
    data = yield ctx.wait_for_event("approval", timeout=timedelta(hours=1))
    yield ctx.wait_for_event("done")
    return data


def test_a_met_deadline_neither_wakes_nor_fires_later() -> None:
    sim = Sim(event_in_time_wf)
    assert sim.step().wake_at == at(3600)
    d = sim.step(event_message("approval", "yes", at=at(100)), now=at(100))
    assert d.wake_at is None
    assert sim.step(now=at(7200)).events == []
    assert sim.step(event_message("done"), now=at(7201)).output == "yes"


def test_an_event_arriving_after_the_deadline_in_the_same_step_loses() -> None:
    sim = Sim(event_timeout_wf)
    sim.step()
    d = sim.step(event_message("approval", "too late", at=at(86401)), now=at(86402))
    assert kinds(d.events) == ["TimerFired", "EventWaitStarted", "EventRaised", "WorkflowCompleted"]
    assert d.output == "timed out, then too late"


# ----------------------------------------------------------------------------- all / any


@workflow(name="t_r_all")
def all_wf(ctx: Context) -> Generator[Any, Any, Any]:
    tasks = [ctx.call(add, i, i) for i in range(3)]
    try:
        results = yield ctx.all(tasks)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return results


def test_all_returns_results_in_the_order_given() -> None:
    sim = Sim(all_wf)
    d = sim.step()
    assert [e.task_id for e in d.events] == [1, 2, 3]  # type: ignore[union-attr]
    assert [w.task_id for w in d.dispatch] == [1, 2, 3]
    d = sim.step(activity_result(3, 40))
    assert kinds(d.events) == ["ActivityCompleted"] and d.status == Status.RUNNING
    d = sim.step(activity_result(2, 20), activity_result(1, 0))
    assert d.output == [0, 20, 40]
    final_replay(sim)


def test_all_raises_the_first_failure_to_happen() -> None:
    sim = Sim(all_wf)
    sim.step()
    d = sim.step(
        activity_result(1, error=KeyError("later"), at=at(2)),
        activity_result(3, error=OutOfStock("earlier"), at=at(1)),
        now=at(3),
    )
    assert d.output == "OutOfStock: earlier"


def test_all_of_nothing_is_an_empty_list() -> None:
    @workflow(name="t_r_all_empty")
    def all_empty(ctx: Context) -> Generator[Any, Any, Any]:
        result = yield ctx.all([])
        return result

    assert Sim(all_empty).step().output == []


@workflow(name="t_r_any")
def any_wf(ctx: Context) -> Generator[Any, Any, Any]:
    fast = ctx.call(add, 1, 1, name="fast")
    slow = ctx.call(add, 2, 2, name="slow")
    timer = ctx.sleep(timedelta(minutes=5))
    winner = yield ctx.any([fast, slow, timer])
    assert winner in (fast, slow, timer)
    label = "fast" if winner is fast else "slow" if winner is slow else "timer"
    try:
        value = winner.result
    except Exception as exc:
        value = f"{type(exc).__name__}: {exc}"
    return [label, value]


def test_any_returns_the_task_object_that_finished_first() -> None:
    sim = Sim(any_wf)
    d = sim.step()
    assert kinds(d.events) == ["ActivityScheduled", "ActivityScheduled", "TimerScheduled"]
    d = sim.step(activity_result(2, 4, at=at(1)), activity_result(1, 2, at=at(2)), now=at(3))
    assert d.output == ["slow", 4]
    end = final_replay(sim)  # the winner is the same object on replay too
    assert end.output == ["slow", 4]


def test_any_winner_may_be_a_timer() -> None:
    sim = Sim(any_wf)
    sim.step()
    d = sim.step(now=at(300))
    assert d.output == ["timer", None]


def test_any_winner_may_have_failed() -> None:
    sim = Sim(any_wf)
    sim.step()
    d = sim.step(activity_result(1, error=OutOfStock("none left")))
    assert d.output == ["fast", "OutOfStock: none left"]
    assert final_replay(sim).output == ["fast", "OutOfStock: none left"]


@workflow(name="t_r_any_then_rest")
def any_then_rest_wf(ctx: Context) -> Generator[Any, Any, Any]:
    a = ctx.call(add, 1, 0)
    b = ctx.call(add, 2, 0)
    first = yield ctx.any([a, b])
    rest = b if first is a else a
    other_value = yield rest
    return [first.result, other_value]


def test_any_winner_is_stable_when_both_results_are_recorded_in_one_step() -> None:
    sim = Sim(any_then_rest_wf)
    sim.step()
    d = sim.step(activity_result(2, 20, at=at(1)), activity_result(1, 10, at=at(2)), now=at(2))
    assert d.output == [20, 10]
    assert final_replay(sim).output == [20, 10]


@workflow(name="t_r_already_done")
def already_done_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    x = ctx.call(add, 1, 0)
    y = ctx.call(add, 2, 0)
    first = yield ctx.any([x, y, ctx.sleep(10)])
    yield ctx.sleep(100)  # meanwhile the other one finishes too
    again = yield ctx.any([x, y] if first is y else [y, x])  # the later one listed first
    try:
        yield ctx.all([x, y] if first is y else [y, x])
    except OutOfStock as exc:
        raised = str(exc)
    else:
        raised = "nothing"
    return ["x" if first is x else "y", "x" if again is x else "y", raised]


def test_groups_of_finished_tasks_go_by_the_order_they_finished_in() -> None:
    sim = Sim(already_done_wf)
    sim.step()
    sim.step(activity_result(2, error=OutOfStock("y failed first"), at=at(1)), now=at(1))
    d = sim.step(activity_result(1, error=OutOfStock("x failed later"), at=at(50)), now=at(101))
    assert d.output == ["y", "y", "y failed first"]
    assert final_replay(sim).output == ["y", "y", "y failed first"]


# ----------------------------------------------------------------------------- children


@workflow(name="t_r_kid")
def kid_wf(ctx: Context, n: int) -> Generator[Any, Any, int]:
    value: int = yield ctx.call(add, n, n)
    return value


@workflow(name="t_r_parent")
def parent_wf(ctx: Context) -> Generator[Any, Any, Any]:
    try:
        value = yield ctx.child(kid_wf, 21, name="Kid")
    except OutOfStock as exc:
        return f"child failed: {exc}"
    return value


def test_child_is_started_with_the_commit_and_its_result_returned() -> None:
    sim = Sim(parent_wf)
    d = sim.step()
    assert kinds(d.events) == ["ChildScheduled"]
    scheduled = d.events[0]
    assert isinstance(scheduled, ChildScheduled)
    assert (scheduled.workflow, scheduled.input, scheduled.name) == ("t_r_kid", 21, "Kid")
    assert [c.instance_id for c in d.children] == [scheduled.child_id]
    start = d.children[0].started
    assert (start.workflow, start.input) == ("t_r_kid", 21)
    assert (start.parent_id, start.parent_task_id, start.parent_run) == (IID, 1, 1)

    d = sim.step(child_result(1, 42, child_id=scheduled.child_id))
    assert kinds(d.events) == ["ChildCompleted", "WorkflowCompleted"]
    assert d.output == 42
    final_replay(sim)


def test_failed_child_raises_its_original_exception() -> None:
    sim = Sim(parent_wf)
    sim.step()
    d = sim.step(child_result(1, error=OutOfStock("kid ran out")))
    assert kinds(d.events) == ["ChildFailed", "WorkflowCompleted"]
    assert d.output == "child failed: kid ran out"


@workflow(name="t_r_parent_of_ended")
def parent_of_ended_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    try:
        yield ctx.child(kid_wf, 1, instance_id="the-kid")
    except WorkflowFailed as exc:
        cause = type(exc.cause).__name__ if exc.cause is not None else None
        return [exc.instance_id, exc.status, cause]
    return []


@pytest.mark.parametrize(
    ("status", "error", "cause"),
    [(Status.CANCELED, Cancelled("stop"), "Cancelled"), (Status.TERMINATED, None, None)],
)
def test_a_child_cancelled_or_terminated_from_outside_raises_workflow_failed(
    status: Status, error: BaseException | None, cause: str | None
) -> None:
    sim = Sim(parent_of_ended_wf)
    assert [c.instance_id for c in sim.step().children] == ["the-kid"]
    message = child_result(1, error=error, status=status, child_id="the-kid")
    d = sim.step(message)
    assert (d.status, d.output) == (Status.COMPLETED, ["the-kid", status.value, cause])
    assert final_replay(sim).output == ["the-kid", status.value, cause]


def test_a_child_reports_its_end_to_its_parent() -> None:
    parent = Sim(parent_wf)
    start = parent.step().children[0]
    kid = Sim(kid_wf, instance_id=start.instance_id)
    kid.history = [start.started]
    d = kid.step(*kid.run(kid.step()))
    assert d.output == 42
    assert len(d.messages) == 1
    out = d.messages[0]
    assert out.instance_id == IID
    d = parent.step(out.message)
    assert d.output == 42


# ----------------------------------------------------------------------------- continue-as-new


@workflow(name="t_r_can")
def can_wf(ctx: Context, n: int) -> Generator[Any, Any, Any]:
    yield ctx.sleep(1)
    if n == 0:
        return "done"
    if n % 2:
        yield ctx.continue_as_new(n - 1)
    return ctx.continue_as_new(n - 1)


@pytest.mark.parametrize("n", [1, 2])  # odd: yielded, even: returned
def test_continue_as_new_ends_the_run_and_describes_the_next(n: int) -> None:
    sim = Sim(can_wf, n)
    sim.step()
    d = sim.step(now=at(1))
    assert kinds(d.events) == ["TimerFired", "WorkflowContinuedAsNew"]
    assert isinstance(d.events[-1], WorkflowContinuedAsNew) and d.events[-1].input == n - 1
    assert d.status == Status.RUNNING
    assert d.next_run is not None
    assert (d.next_run.run, d.next_run.input, d.next_run.workflow) == (2, n - 1, "t_r_can")
    assert d.messages == []


# ----------------------------------------------------------------------------- side effects


@workflow(name="t_r_effects")
def effects_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    before = ctx.now()
    ident = ctx.uuid()
    rng = ctx.random()
    draws = [rng.random(), rng.randint(0, 10**9)]
    yield ctx.sleep(60)
    after = ctx.now()
    return [before.isoformat(), str(ident), draws, after.isoformat(), ctx.random().random()]


def test_now_uuid_random_are_recorded_and_replayed() -> None:
    sim = Sim(effects_wf)
    d = sim.step(now=at(5))
    assert kinds(d.events) == [
        "SideEffectRecorded",
        "SideEffectRecorded",
        "SideEffectRecorded",
        "TimerScheduled",
    ]
    effects = [e for e in d.events if isinstance(e, SideEffectRecorded)]
    assert [e.effect for e in effects] == ["now", "uuid", "random"]
    d = sim.step(now=at(70))
    assert d.output is not None
    before, _ident, draws, after, again = d.output
    assert before == at(5).isoformat() and after == at(70).isoformat()
    assert draws == [d.output[2][0], d.output[2][1]]
    assert again not in draws  # one generator per run, not reseeded per call
    assert final_replay(sim).output == d.output  # replay at another time: same values


def test_uuid_and_random_differ_between_instances() -> None:
    one = Sim(effects_wf, instance_id="a")
    two = Sim(effects_wf, instance_id="b")
    e1 = [e for e in one.step().events if isinstance(e, SideEffectRecorded)]
    e2 = [e for e in two.step().events if isinstance(e, SideEffectRecorded)]
    assert e1[1].value != e2[1].value and e1[2].value != e2[2].value


def test_recorded_side_effects_win_over_fresh_ones() -> None:
    history = build_history(
        started(effects_wf),
        side_effect(1, "now", "2001-02-03T04:05:06+00:00"),
        side_effect(2, "uuid", "12345678-1234-4234-8234-123456789abc"),
        side_effect(3, "random", 7),
        timer_scheduled(4, at(60)),
        timer_fired(4),
    )
    d = replay(effects_wf, history, [], at(100), instance_id=IID)
    assert d.output is not None
    assert d.output[:2] == ["2001-02-03T04:05:06+00:00", "12345678-1234-4234-8234-123456789abc"]
    import random

    rng = random.Random(7)
    assert d.output[2] == [rng.random(), rng.randint(0, 10**9)]


# ----------------------------------------------------------------------------- custom status


@workflow(name="t_r_status")
def status_wf(ctx: Context) -> Generator[Any, Any, None]:
    ctx.set_status({"step": "start"})
    ctx.set_status({"step": "start"})  # unchanged: not recorded again
    yield ctx.sleep(1)
    ctx.set_status({"step": "slept"})
    yield ctx.sleep(1)


def test_set_status_is_recorded_once_and_not_again_on_replay() -> None:
    sim = Sim(status_wf)
    d = sim.step()
    assert kinds(d.events) == ["StatusSet", "TimerScheduled"]
    assert d.custom_status == {"step": "start"}
    d = sim.step(now=at(1))
    assert kinds(d.events) == ["TimerFired", "StatusSet", "TimerScheduled"]
    assert isinstance(d.events[1], StatusSet) and d.events[1].value == {"step": "slept"}
    assert d.custom_status == {"step": "slept"}
    d = sim.step(now=at(1))
    assert d.events == [] and d.custom_status == {"step": "slept"}


# ----------------------------------------------------------------------------- patching


@workflow(name="t_r_patched")
def patched_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    first: int = yield ctx.call(add, 1, 1)
    if ctx.patched("use-greet"):
        second = yield ctx.call(greet, "new")
    else:
        second = yield ctx.call(other)
    return [first, second, ctx.patched("use-greet")]


def test_patched_is_true_on_new_runs_and_records_a_marker() -> None:
    sim = Sim(patched_wf)
    d = sim.step(*sim.run(sim.step()))
    assert kinds(d.events) == ["ActivityCompleted", "PatchMarker", "ActivityScheduled"]
    marker = d.events[1]
    assert isinstance(marker, PatchMarker) and (marker.task_id, marker.patch_id) == (2, "use-greet")
    d = sim.step(*sim.run(d))
    assert d.output == [2, "hi new", True]
    final_replay(sim)


def test_patched_is_false_for_runs_that_passed_the_point_on_old_code() -> None:
    history = build_history(
        started(patched_wf),
        activity_scheduled(1, add, (1, 1)),
        activity_completed(1, 2),
        activity_scheduled(2, other),
    )
    d = replay(patched_wf, history, [activity_result(2, "old path")], T0, instance_id=IID)
    assert d.stuck is None
    assert kinds(d.events) == ["ActivityCompleted", "WorkflowCompleted"]
    assert d.output == [2, "old path", False]


@workflow(name="t_r_patch_retired")
def patch_retired_wf(ctx: Context) -> Generator[Any, Any, str]:
    yield ctx.call(add, 1, 1)
    text: str = yield ctx.call(greet, "new")  # the patch is deployed everywhere: check removed
    return text


def test_a_retired_patch_marker_is_stepped_over() -> None:
    history = build_history(
        started(patch_retired_wf),
        activity_scheduled(1, add, (1, 1)),
        activity_completed(1, 2),
        patch_marker(2, "use-greet"),
        activity_scheduled(3, greet, ("new",)),
    )
    d = replay(patch_retired_wf, history, [activity_result(3, "hi new")], T0, instance_id=IID)
    assert d.stuck is None
    assert d.output == "hi new"


@workflow(name="t_r_patch_kept")
def patch_kept_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    # "first-change" was retired; "second-change" is still checked.
    second = ctx.patched("second-change")
    value = yield ctx.call(add, 1, 1)
    return [second, value]


def test_a_retired_marker_before_a_kept_one_does_not_hide_it() -> None:
    history = build_history(
        started(patch_kept_wf),
        patch_marker(1, "first-change"),
        patch_marker(2, "second-change"),
        activity_scheduled(3, add, (1, 1)),
    )
    d = replay(patch_kept_wf, history, [activity_result(3, 2)], T0, instance_id=IID)
    assert d.stuck is None
    assert d.output == [True, 2]


def test_a_marker_of_another_patch_does_not_count_as_this_one() -> None:
    history = build_history(
        started(patch_kept_wf),
        patch_marker(1, "first-change"),
        activity_scheduled(2, add, (1, 1)),
    )
    d = replay(patch_kept_wf, history, [activity_result(2, 2)], T0, instance_id=IID)
    assert d.stuck is None
    assert d.output == [False, 2]


# ----------------------------------------------------------------------------- is_replaying

SEEN: list[tuple[str, bool]] = []


@workflow(name="t_r_replaying")
def replaying_wf(ctx: Context) -> Generator[Any, Any, None]:
    SEEN.append(("start", ctx.is_replaying))
    a = ctx.call(add, 1, 0)
    b = ctx.call(add, 2, 0)
    yield ctx.any([a, b])
    SEEN.append(("first", ctx.is_replaying))
    yield ctx.all([a, b])
    SEEN.append(("both", ctx.is_replaying))


def test_is_replaying_is_true_exactly_while_re_running_recorded_steps() -> None:
    sim = Sim(replaying_wf)
    SEEN.clear()
    sim.step()
    assert SEEN == [("start", False)]
    SEEN.clear()
    sim.step(activity_result(1, 1))
    assert SEEN == [("start", True), ("first", False)]
    SEEN.clear()
    sim.step(activity_result(2, 2))
    # "first" ran in the previous step already: this step re-runs it.
    assert SEEN == [("start", True), ("first", True), ("both", False)]
    SEEN.clear()
    final_replay(sim)
    assert SEEN == [("start", True), ("first", True), ("both", True)]


def test_the_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    @workflow(name="t_r_logging")
    def logging_wf(ctx: Context) -> Generator[Any, Any, None]:
        ctx.logger.warning("before")
        yield ctx.sleep(1)
        ctx.logger.warning("after")

    sim = Sim(logging_wf)
    with caplog.at_level("WARNING"):
        sim.step()
        sim.step(now=at(1))
        sim.step(now=at(2))
    assert [r.getMessage() for r in caplog.records] == [f"[{IID}] before", f"[{IID}] after"]


# ----------------------------------------------------------------------------- cancel / terminate


@workflow(name="t_r_cancel")
def cancel_wf(ctx: Context, swallow: bool) -> Generator[Any, Any, str]:
    try:
        yield ctx.sleep(timedelta(hours=1))
    except Cancelled as exc:
        yield ctx.call(greet, "cleanup")
        if swallow:
            return f"cleaned up after {exc.reason}"
        raise
    return "slept"


def test_cancel_is_thrown_at_the_current_yield_and_cleanup_may_run() -> None:
    sim = Sim(cancel_wf, False)
    sim.step()
    d = sim.step(cancel_message("user asked"))
    assert kinds(d.events) == ["CancelRequested", "ActivityScheduled"]
    assert d.status == Status.RUNNING
    assert [w.activity for w in d.dispatch] == ["t_r_greet"]
    assert sim.step(cancel_message("twice")).events == []  # a second request changes nothing
    d = sim.step(*sim.run(d))
    assert kinds(d.events) == ["ActivityCompleted", "WorkflowCanceled"]
    assert d.status == Status.CANCELED
    assert d.error is not None and d.error.type == "durable.errors.Cancelled"
    final_replay(sim)


def test_a_workflow_may_swallow_cancel_and_complete() -> None:
    sim = Sim(cancel_wf, True)
    sim.step()
    d = sim.step(cancel_message("user asked"))
    d = sim.step(*sim.run(d))
    assert d.status == Status.COMPLETED
    assert d.output == "cleaned up after user asked"


def test_terminate_ends_the_run_without_running_code() -> None:
    sim = Sim(cancel_wf, True)
    sim.step()
    msgs: list[Message] = [event_message("x"), terminate_message("enough")]
    d = sim.step(*msgs)
    assert kinds(d.events) == ["WorkflowTerminated"]
    assert d.status == Status.TERMINATED
    assert sorted(d.consumed) == sorted(m.id for m in msgs)
    after = replay(cancel_wf, sim.history, [event_message("late")], at(9), instance_id=IID)
    assert after.status == Status.TERMINATED and after.events == []
    assert len(after.consumed) == 1


@workflow(name="t_r_finally")
def finally_wf(ctx: Context) -> Generator[Any, Any, None]:
    try:
        yield ctx.sleep(10)
    finally:
        ctx.set_status("cleaning up")
        ctx.now()
        yield ctx.call(greet, "cleanup")


def test_a_finally_block_runs_only_when_the_workflow_really_leaves_the_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    sim = Sim(finally_wf)
    d = sim.step()
    assert kinds(d.events) == ["TimerScheduled"]  # the step ends suspended in the try
    assert d.custom_status is None
    d = sim.step(now=at(5))
    assert d.events == []
    gc.collect()
    assert unraisable == []  # no "generator ignored GeneratorExit" at garbage collection
    d = sim.step(now=at(10))
    assert kinds(d.events) == ["TimerFired", "StatusSet", "SideEffectRecorded", "ActivityScheduled"]
    d = sim.step(*sim.run(d), now=at(10))
    assert d.status == Status.COMPLETED
    final_replay(sim)
    gc.collect()
    assert unraisable == []


# ----------------------------------------------------------------------------- workflow shapes


@workflow(name="t_r_raises")
def raises_wf(ctx: Context) -> Generator[Any, Any, None]:
    yield ctx.call(add, 1, 1)
    raise OutOfStock("workflow gave up")


def test_a_workflow_that_raises_fails() -> None:
    sim = Sim(raises_wf)
    d = sim.step(*sim.run(sim.step()))
    assert kinds(d.events) == ["ActivityCompleted", "WorkflowFailed"]
    assert d.status == Status.FAILED
    assert d.error is not None and d.error.message == "workflow gave up"
    assert isinstance(d.error.to_exception(), OutOfStock)
    final_replay(sim)


@workflow(name="t_r_plain")
def plain_wf(ctx: Context, n: int) -> int:
    return n * 2


def test_a_plain_function_completes_in_one_step() -> None:
    d = Sim(plain_wf, 21).step()
    assert kinds(d.events) == ["WorkflowCompleted"]
    assert (d.status, d.output) == (Status.COMPLETED, 42)


@workflow(name="t_r_bad_yield")
def bad_yield_wf(ctx: Context, catch: bool) -> Generator[Any, Any, str]:
    try:
        yield 42
    except TypeError as exc:
        if not catch:
            raise
        return f"caught: {'not a task' in str(exc)}"
    return "unreachable"


def test_yielding_a_non_task_throws_type_error_into_the_workflow() -> None:
    assert Sim(bad_yield_wf, True).step().output == "caught: True"
    d = Sim(bad_yield_wf, False).step()
    assert d.status == Status.FAILED
    assert d.error is not None and d.error.type == "TypeError"


@workflow(name="t_r_plain_yield")
def plain_yield_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    a = yield ctx.call(add, 1, 2)
    yield ctx.sleep(5)
    b = yield ctx.all([ctx.call(add, a, 1), ctx.call(greet, "x")])
    return [a, b]


@workflow(name="t_r_yield_from")
def yield_from_wf(ctx: Context) -> Generator[Any, Any, list[Any]]:
    a = yield from ctx.call(add, 1, 2)
    yield from ctx.sleep(5)
    b = yield from ctx.all([ctx.call(add, a, 1), ctx.call(greet, "x")])
    return [a, b]


def _drive_to_end(sim: Sim) -> Decision:
    now = T0
    d = sim.step(now=now)
    while d.status == Status.RUNNING:
        results = sim.run(d, now)
        if not results and d.wake_at is not None:
            now = d.wake_at
        d = sim.step(*results, now=now)
    return d


def test_yield_from_records_the_same_history_as_plain_yield() -> None:
    one, two = Sim(plain_yield_wf), Sim(yield_from_wf)
    assert _drive_to_end(one).output == _drive_to_end(two).output == [3, [4, "hi x"]]
    strip = {"seq", "timestamp", "workflow"}
    assert [e.model_dump(exclude=strip) for e in one.history] == [
        e.model_dump(exclude=strip) for e in two.history
    ]
    # the histories are interchangeable: each code replays the other's history
    assert replay_history(yield_from_wf, one.history).output == [3, [4, "hi x"]]


# ----------------------------------------------------------------------------- non-determinism


def assert_stuck(
    wf: Workflow[Any, Any],
    history: list[Event],
    position: int,
    recorded: str,
    yielded: str,
) -> NonDeterminismError:
    inbox: list[Message] = [activity_result(1, 5), event_message("approval")]
    d = replay(wf, history, inbox, at(10**6), instance_id=IID)
    assert d.status == Status.STUCK
    err = d.stuck
    assert isinstance(err, NonDeterminismError)
    assert (err.position, err.recorded, err.yielded) == (position, recorded, yielded)
    assert f"#{position}" in str(err) and recorded in str(err) and yielded in str(err)
    assert IID in str(err)
    assert d.error is not None and d.error.type == "durable.errors.NonDeterminismError"
    # a stuck step writes nothing, consumes nothing and starts nothing
    assert d.events == [] and d.consumed == [] and d.dispatch == [] and d.children == []
    assert d.next_run is None and d.messages == []
    return err


@workflow(name="t_r_nd_two_calls")
def nd_two_calls(ctx: Context) -> Generator[Any, Any, None]:
    yield ctx.call(add, 1, 1)
    yield ctx.call(greet, "x")


def _two_calls_history(second: str) -> list[Event]:
    return build_history(
        started(nd_two_calls),
        activity_scheduled(1, add, (1, 1)),
        activity_completed(1, 2),
        activity_scheduled(2, second),
    )


def test_nd_other_activity_name() -> None:
    assert_stuck(
        nd_two_calls,
        _two_calls_history("t_r_other"),
        2,
        "activity 't_r_other'",
        "activity 't_r_greet'",
    )


def test_nd_other_command_kind() -> None:
    history = build_history(
        started(nd_two_calls),
        activity_scheduled(1, add, (1, 1)),
        activity_completed(1, 2),
        timer_scheduled(2, at(5)),
    )
    assert_stuck(nd_two_calls, history, 2, "a timer", "activity 't_r_greet'")
    history[-1] = event_wait_started(2, "approval").model_copy(update={"seq": 4})
    assert_stuck(nd_two_calls, history, 2, "event 'approval'", "activity 't_r_greet'")
    history[-1] = child_scheduled(2, kid_wf, 1).model_copy(update={"seq": 4})
    assert_stuck(nd_two_calls, history, 2, "child workflow 't_r_kid'", "activity 't_r_greet'")


@workflow(name="t_r_nd_one_call")
def nd_one_call(ctx: Context) -> Generator[Any, Any, str]:
    yield ctx.call(add, 1, 1)
    return "done early"


def test_nd_missing_yield() -> None:
    # The code returns where the history goes on with a second command.
    history = _two_calls_history("t_r_greet")
    assert_stuck(nd_one_call, history, 2, "activity 't_r_greet'", "WorkflowCompleted")


def test_nd_extra_yield() -> None:
    history = build_history(
        started(nd_one_call),
        activity_scheduled(1, add, (1, 1)),
        activity_completed(1, 2),
        workflow_completed("done early"),
    )
    assert_stuck(nd_two_calls, history, 2, "WorkflowCompleted", "a wait on activity 't_r_greet'")


def test_nd_extra_yield_before_recorded_commands() -> None:
    @workflow(name="t_r_nd_inserted")
    def inserted(ctx: Context) -> Generator[Any, Any, None]:
        yield ctx.call(add, 1, 1)
        yield ctx.sleep(10)  # new code inserted a timer before the greeting
        yield ctx.call(greet, "x")

    assert_stuck(
        inserted, _two_calls_history("t_r_greet"), 2, "activity 't_r_greet'", "timer (0:00:10)"
    )


def test_nd_recorded_end_while_the_code_still_waits() -> None:
    history = build_history(
        started(nd_two_calls),
        activity_scheduled(1, add, (1, 1)),
        activity_completed(1, 2),
        activity_scheduled(2, greet, ("x",)),
        workflow_completed(None),
    )
    assert_stuck(nd_two_calls, history, 2, "WorkflowCompleted", "a wait on activity 't_r_greet'")


def test_nd_other_event_name_and_other_side_effect() -> None:
    @workflow(name="t_r_nd_event")
    def waits(ctx: Context) -> Generator[Any, Any, None]:
        ctx.uuid()
        yield ctx.wait_for_event("approval")

    history = build_history(started(waits), side_effect(1, "now", "2030-01-01T00:00:00+00:00"))
    assert_stuck(waits, history, 1, "side effect now()", "side effect uuid()")
    history = build_history(
        started(waits),
        side_effect(1, "uuid", "12345678-1234-4234-8234-123456789abc"),
        event_wait_started(2, "reject"),
    )
    assert_stuck(waits, history, 2, "event 'reject'", "event 'approval'")


def test_nd_recorded_end_of_another_kind() -> None:
    history = build_history(started(plain_wf, 21), workflow_failed(OutOfStock("old code")))
    assert_stuck(plain_wf, history, 1, "WorkflowFailed", "WorkflowCompleted")


def test_malformed_histories_are_refused() -> None:
    with pytest.raises(InvalidHistoryError):
        replay(plain_wf, [], [], T0, instance_id=IID)
    with pytest.raises(InvalidHistoryError):
        replay(plain_wf, build_history(timer_fired(1)), [], T0, instance_id=IID)
    after_end = build_history(started(plain_wf, 1), workflow_completed(2), status_set("late"))
    with pytest.raises(InvalidHistoryError, match="after its end"):
        replay(plain_wf, after_end, [], T0, instance_id=IID)


def test_replay_history_reads_events_json_text_and_files(tmp_path: Path) -> None:
    sim = Sim(call_wf)
    sim.step(*sim.run(sim.step()))
    text = dump_history(sim.history)
    path = tmp_path / "history.json"
    path.write_text(text)
    for source in (sim.history, text, text.encode(), path):
        assert replay_history(call_wf, source).output == "hello ada"
    with pytest.raises(NonDeterminismError):
        replay_history(nd_two_calls, path)
    with pytest.raises(ValueError, match="WorkflowStarted"):
        replay_history(call_wf, [])


def test_nd_fixed_code_resumes_a_stuck_history() -> None:
    history = _two_calls_history("t_r_other")
    assert replay(nd_two_calls, history, [], T0, instance_id=IID).status == Status.STUCK

    @workflow(name="t_r_nd_fixed")
    def fixed(ctx: Context) -> Generator[Any, Any, str]:
        yield ctx.call(add, 1, 1)
        text: str = yield ctx.call(other)
        return text

    d = replay(fixed, history, [activity_result(2, "resumed")], T0, instance_id=IID)
    assert (d.status, d.output) == (Status.COMPLETED, "resumed")


# ----------------------------------------------------------------------------- payloads


@workflow(name="t_r_typed")
def typed_wf(ctx: Context, user: User) -> Generator[Any, Any, list[Any]]:
    assert isinstance(user, User)
    user = yield ctx.call(visit, user)
    point = yield ctx.call(move, Point(1, 2), dx=3)
    return [type(user).__name__, user, type(point).__name__, point]


def test_pydantic_and_dataclass_values_come_back_typed_on_first_run_and_on_replay() -> None:
    sim = Sim(typed_wf, User(name="ada"))
    d = sim.step(*sim.run(sim.step()))
    assert d.dispatch[0].input == {"args": [{"x": 1, "y": 2}], "kwargs": {"dx": 3}}
    d = sim.step(*sim.run(d))
    expected = ["User", {"name": "ada", "visits": 1}, "Point", {"x": 4, "y": 2}]
    assert d.output == expected
    assert final_replay(sim).output == expected


@workflow(name="t_r_pickled")
def pickled_wf(ctx: Context) -> Generator[Any, Any, int]:
    value = yield ctx.call(make_opaque, 7)
    assert isinstance(value, Opaque)
    return value.value


def test_pickle_codec_carries_values_json_cannot() -> None:
    sim = Sim(pickled_wf)
    d = sim.step(*sim.run(sim.step()))
    assert d.output == 7
    assert final_replay(sim).output == 7


@workflow(name="t_r_errors")
def errors_wf(ctx: Context, which: str) -> Generator[Any, Any, list[Any]]:
    try:
        if which == "typed":
            yield ctx.call(out_of_stock, "tea")
        else:
            yield ctx.call(raise_unpicklable)
    except OutOfStock as exc:
        return ["OutOfStock", str(exc)]
    except ActivityError as exc:
        return ["ActivityError", exc.type, exc.message, "Unpicklable" in exc.traceback]
    return []


def test_activity_exceptions_are_re_raised_as_their_own_type() -> None:
    sim = Sim(errors_wf, "typed")
    assert sim.step(*sim.run(sim.step())).output == ["OutOfStock", "no tea"]
    assert final_replay(sim).output == ["OutOfStock", "no tea"]


def test_an_exception_that_cannot_be_pickled_becomes_activity_error() -> None:
    sim = Sim(errors_wf, "unpicklable")
    d = sim.step(*sim.run(sim.step()))
    assert d.output == ["ActivityError", f"{__name__}.Unpicklable", "cannot travel", True]
    assert isinstance(sim.history[-2], ActivityFailed)


@workflow(name="t_r_bad_args")
def bad_args_wf(ctx: Context) -> Generator[Any, Any, str]:
    with contextlib.suppress(SerializationError):
        yield ctx.call(add, Opaque(1), 2)
    total: int = yield ctx.call(add, 1, 2)
    return f"recovered with {total}"


def test_arguments_json_cannot_carry_raise_serialization_error_at_the_yield() -> None:
    sim = Sim(bad_args_wf)
    d = sim.step()
    assert d.status == Status.RUNNING
    assert [e.task_id for e in d.events] == [1]  # type: ignore[union-attr]  # no id wasted
    d = sim.step(*sim.run(d))
    assert d.output == "recovered with 3"
    final_replay(sim)


@workflow(name="t_r_bad_arity")
def bad_arity_wf(ctx: Context) -> Generator[Any, Any, None]:
    yield ctx.call(add, 1)


def test_a_call_that_does_not_fit_the_signature_fails_the_workflow_not_the_step() -> None:
    d = Sim(bad_arity_wf).step()
    assert d.status == Status.FAILED
    assert d.error is not None and "bad arguments for activity 't_r_add'" in d.error.message
    assert kinds(d.events) == ["WorkflowFailed"]


@workflow(name="t_r_bad_child_input")
def bad_child_input_wf(ctx: Context) -> Generator[Any, Any, str]:
    try:
        yield ctx.child(kid_wf, Opaque(1))
    except SerializationError as exc:
        return f"refused: {'input of child workflow' in str(exc)}"
    return "unreachable"


def test_child_input_json_cannot_carry_raises_at_the_yield() -> None:
    d = Sim(bad_child_input_wf).step()
    assert d.output == "refused: True"
    assert d.children == []


@workflow(name="t_r_bad_can")
def bad_can_wf(ctx: Context) -> Generator[Any, Any, Any]:
    yield ctx.sleep(1)
    return ctx.continue_as_new(Opaque(1))


def test_continue_as_new_with_input_json_cannot_carry_fails_the_workflow() -> None:
    sim = Sim(bad_can_wf)
    sim.step()
    d = sim.step(now=at(1))
    assert d.status == Status.FAILED
    assert d.error is not None and d.error.type == "durable.errors.SerializationError"


def test_typed_workflow_input_that_does_not_validate_fails_the_workflow() -> None:
    d = Sim(typed_wf, {"nom": "ada"}).step()
    assert d.status == Status.FAILED
    assert d.error is not None and "input of workflow 't_r_typed'" in d.error.message
