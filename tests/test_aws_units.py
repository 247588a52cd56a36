"""The AWS loop's logic without Step Functions: what the orchestrator tells the loop to do,
how it hands back when time runs low, how an attempt is found by reference.

Real engine, real MemoryStore, real workflows: only the Lambda's remaining time is given.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from durable import Context, activity, workflow
from durable.errors import UnknownWorkflowError
from durable.runtime.aws_config import execution_input, name_root
from durable.runtime.aws_loop import (
    MAX_PARK_SECONDS,
    ActivityRef,
    LoopDecision,
    orchestrate,
    run_referenced_attempt,
)
from durable.runtime.clock import VirtualClock
from durable.runtime.start import create_instance, encode_input
from durable.store import MemoryStore
from durable.workflow import Workflow, get_workflow


@activity(name="aws_units.remote")
def remote(x: int) -> int:
    return x * 10


@activity(name="aws_units.local", local=True)
def local(x: int) -> int:
    return x + 1


@activity(name="aws_units.slow", timeout=0.2)
def slow(x: int) -> int:
    time.sleep(2)
    return x


@workflow(name="aws_units.locals_then_remote")
def locals_then_remote(ctx: Context, n: int) -> Any:
    value = 0
    for _ in range(n):
        value = yield ctx.call(local, value)
    return (yield ctx.call(remote, value))


@workflow(name="aws_units.timer_and_activity")
def timer_and_activity(ctx: Context, _: None) -> Any:
    winner = yield ctx.any([ctx.call(remote, 1), ctx.sleep(timedelta(minutes=5))])
    return winner is not None


@workflow(name="aws_units.event")
def waits_for_event(ctx: Context, _: None) -> Any:
    return (yield ctx.wait_for_event("go"))


@workflow(name="aws_units.sleeper")
def sleeper(ctx: Context, _: None) -> Any:
    yield ctx.sleep(timedelta(seconds=90))
    return "woke"


@workflow(name="aws_units.slow_flow")
def slow_flow(ctx: Context, _: None) -> Any:
    return (yield ctx.call(slow, 1))


def _start(store: MemoryStore, wf: Workflow[Any, Any], value: Any, clock: VirtualClock) -> str:
    iid, _ = create_instance(store, wf, encode_input(wf, value), None, clock.now())
    return iid


def _orchestrate(
    store: MemoryStore,
    iid: str,
    clock: VirtualClock,
    left: float = 600.0,
    recover: bool = False,
    **options: Any,
) -> LoopDecision:
    """``orchestrate`` with ``left`` seconds of Lambda time; ``options`` go through."""
    options.setdefault("resolve", get_workflow)
    return orchestrate(
        store,
        iid,
        clock=clock,
        time_left=lambda: left,
        recover=recover,
        **options,
    )


def _run_all(store: MemoryStore, clock: VirtualClock, decision: LoopDecision) -> None:
    for ref in decision.activities:
        run_referenced_attempt(store, ref, clock, limit=None)


def test_local_activities_run_in_the_orchestrator_then_remote_ones_are_started_by_the_caller() -> (
    None
):
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, locals_then_remote, 5, clock)
    decision = _orchestrate(store, iid, clock)
    assert decision.next == "park" and decision.local_attempts == 5
    assert decision.activities == [ActivityRef(iid, 1, decision.activities[0].task_id, 1)]
    payload = decision.as_payload()
    assert payload["activities"] == [
        {"instance_id": iid, "run": 1, "task_id": decision.activities[0].task_id, "attempt": 1}
    ]
    _run_all(store, clock, decision)
    assert _orchestrate(store, iid, clock).next == "succeed"
    assert store.get(iid).output == 50  # type: ignore[union-attr]


def test_hands_back_when_the_lambda_time_runs_low_and_resumes_with_recover() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, locals_then_remote, 3, clock)
    first = _orchestrate(store, iid, clock, left=5.0)
    assert first.next == "continue" and first.recover and first.local_attempts == 0
    second = _orchestrate(store, iid, clock, recover=first.recover)
    assert second.next == "park" and second.local_attempts == 3


@workflow(name="aws_units.local_pair")
def local_pair(ctx: Context, _: None) -> Any:
    return (yield ctx.all([ctx.call(local, 1), ctx.call(local, 2)]))


def test_time_running_out_between_local_attempts_commits_what_ran_and_hands_back() -> None:
    """A later attempt of one step is never started with no time left (it would fail at once)."""
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, local_pair, None, clock)
    # before the attempts, the first one's check and its limit; then too little for the second
    remaining = iter([100.0, 100.0, 100.0, 9.0])

    first = orchestrate(
        store,
        iid,
        resolve=get_workflow,
        clock=clock,
        time_left=lambda: next(remaining, 9.0),
    )

    assert first.next == "continue" and first.recover and first.local_attempts == 1
    kinds = [e.kind for e in store.history(iid)]
    assert kinds.count("ActivityCompleted") == 1 and "ActivityFailed" not in kinds
    second = _orchestrate(store, iid, clock, recover=True)
    assert second.next == "succeed" and second.local_attempts == 1
    assert store.get(iid).output == [2, 3]  # type: ignore[union-attr]


def test_outcomes_no_step_took_are_posted_before_the_orchestrator_returns() -> None:
    """A local outcome the next step cannot take (the code is missing: STUCK) is kept."""
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, locals_then_remote, 1, clock)
    resolvers = iter([get_workflow])

    def resolve(name: str) -> Workflow[Any, Any]:
        found = next(resolvers, None)
        if found is None:
            raise UnknownWorkflowError(name)
        return found(name)

    stuck = orchestrate(store, iid, resolve=resolve, clock=clock, time_left=lambda: 600.0)

    assert stuck.next == "sleep" and stuck.local_attempts == 1
    assert [m.kind for m in store.load(iid).inbox] == ["activity_result"]
    resumed = _orchestrate(store, iid, clock)
    assert resumed.next == "park" and resumed.local_attempts == 0  # not run again


def test_pure_timer_sleeps_for_the_seconds_to_the_timer() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, sleeper, None, clock)
    decision = _orchestrate(store, iid, clock)
    assert (decision.next, decision.wait_seconds) == ("sleep", 90)
    clock.advance_to(clock.now() + timedelta(seconds=decision.wait_seconds))
    assert _orchestrate(store, iid, clock).next == "succeed"


def test_timer_with_an_activity_in_flight_parks_until_the_timer() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, timer_and_activity, None, clock)
    decision = _orchestrate(store, iid, clock)
    assert decision.next == "park" and len(decision.activities) == 1
    assert 299 <= decision.wait_seconds <= 300


def test_event_wait_parks_with_the_longest_timeout() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, waits_for_event, None, clock)
    decision = _orchestrate(store, iid, clock)
    assert (decision.next, decision.wait_seconds) == ("park", MAX_PARK_SECONDS)


def test_an_activity_past_its_timeout_is_recorded_as_failed() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, slow_flow, None, clock)
    decision = _orchestrate(store, iid, clock)
    started = time.monotonic()
    result = run_referenced_attempt(store, decision.activities[0], clock, limit=60)
    assert time.monotonic() - started < 1.5
    assert result is not None and result.error is not None
    assert result.error.type.endswith("TimeoutError")
    assert _orchestrate(store, iid, clock).next == "fail"


def test_an_attempt_with_an_outcome_is_not_run_again() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, locals_then_remote, 0, clock)
    ref = _orchestrate(store, iid, clock).activities[0]
    assert run_referenced_attempt(store, ref, clock, limit=None) is not None
    _orchestrate(store, iid, clock)  # consumes the result: the history has the outcome
    assert run_referenced_attempt(store, ref, clock, limit=None) is None
    unknown = ActivityRef(iid, 1, 999, 1)
    assert run_referenced_attempt(store, unknown, clock, limit=None) is None
    gone = ActivityRef("no-such-instance", 1, 1, 1)
    assert run_referenced_attempt(store, gone, clock, limit=None) is None


def test_a_crashed_attempt_is_recorded_as_failed_without_running() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, locals_then_remote, 0, clock)
    ref = _orchestrate(store, iid, clock).activities[0]
    crash = {"Error": "Sandbox.Timedout", "Cause": "Task timed out after 900.00 seconds"}
    result = run_referenced_attempt(store, ref, clock, limit=None, crash=crash)
    assert result is not None and result.error is not None
    assert result.error.type.endswith("ActivityCrashed")
    assert "Sandbox.Timedout" in result.error.message
    assert _orchestrate(store, iid, clock).next == "fail"


@pytest.mark.parametrize(
    "instance_id",
    ["simple", "order/42 with spaces", "ü" * 256, "a" * 256, "x:y", "x;y"],
)
def test_execution_names_are_valid_and_distinct(instance_id: str) -> None:
    root = name_root(instance_id)
    name = f"{root}-{999_999}"
    assert len(name) <= 80
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    assert name_root(instance_id + "!") != root
    assert execution_input(instance_id)["name_root"] == root


@workflow(name="aws_units.long_sleep")
def long_sleep(ctx: Context, _: None) -> Any:
    yield ctx.sleep(timedelta(days=400))
    return "done"


def test_long_waits_are_cut_into_weeks_and_an_old_execution_hands_over() -> None:
    from durable.runtime.aws_loop import HAND_OVER_AGE_SECONDS, MAX_WAIT_SECONDS

    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, long_sleep, None, clock)
    started, weeks, executions = clock.now(), 0, 1

    while (decision := _orchestrate(store, iid, clock, started=started)).next in (
        "sleep",
        "hand_over",
    ):
        if decision.next == "hand_over":  # a successor execution starts now
            assert (clock.now() - started).total_seconds() >= HAND_OVER_AGE_SECONDS
            started, executions = clock.now(), executions + 1
            continue
        assert decision.wait_seconds <= MAX_WAIT_SECONDS
        assert decision.weight == 20  # however long it waits
        weeks += 1
        clock.advance_to(clock.now() + timedelta(seconds=decision.wait_seconds))
        assert (clock.now() - started).total_seconds() < 365 * 24 * 3600  # Step Functions' limit

    assert decision.next == "succeed" and weeks == 58  # 400 days in weeks
    assert executions == 2


def test_an_instance_of_unknown_code_is_stuck_and_looked_at_hourly() -> None:
    from durable.history import WorkflowStarted

    store, clock = MemoryStore(), VirtualClock()
    store.create("ghost-1", WorkflowStarted(workflow="no.such.workflow", timestamp=clock.now()))
    decision = _orchestrate(store, "ghost-1", clock)
    assert (decision.next, decision.wait_seconds) == ("sleep", 3600)
    header = store.get("ghost-1")
    assert header is not None and header.status == "STUCK"
    assert header.error is not None and "no.such.workflow" in header.error.message


def test_hand_over_at_the_threshold_without_stepping() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, sleeper, None, clock)
    decision = _orchestrate(store, iid, clock, recover=True, events=20_000)
    assert (decision.next, decision.recover, decision.steps) == ("hand_over", True, 0)
    assert store.get(iid).version == 1  # type: ignore[union-attr]
    below = _orchestrate(store, iid, clock)
    assert below.next == "sleep" and below.events == below.weight


def test_unimportable_workflow_modules_are_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from durable.errors import ConfigurationError
    from durable.runtime import aws_config

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DURABLE_MODULES", "no_such_module_anywhere")
    monkeypatch.setenv("HAND_OVER_EVENTS", "100")
    aws_config.configure(store_factory=lambda settings, waker: MemoryStore())  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigurationError, match="no_such_module_anywhere"):
            aws_config.services()
        monkeypatch.setenv("HAND_OVER_EVENTS", "lots")
        with pytest.raises(ConfigurationError, match="HAND_OVER_EVENTS"):
            aws_config.services()
    finally:
        aws_config.reset()


@activity(name="aws_units.noop")
def _noop() -> None:
    return None


@workflow(name="aws_units.waits")
def _waits(ctx: Context, what: str) -> Any:
    timer = ctx.sleep(3600)
    if what == "timer":
        yield timer
    elif what == "activity and timer":
        yield ctx.any([ctx.call(_noop), timer])
    elif what == "event or timer":
        yield ctx.any([ctx.wait_for_event("go"), timer])
    elif what == "child":
        yield ctx.child(activity_after_event, None)


@pytest.mark.parametrize(
    ("what", "others"),
    [
        ("nothing", False),
        ("timer", False),
        ("activity and timer", False),
        ("event or timer", True),
        ("child", True),
    ],
)
def test_what_counts_as_waiting_for_others(what: str, others: bool) -> None:
    from datetime import UTC, datetime

    from durable.history import WorkflowStarted
    from durable.replay import replay

    started = WorkflowStarted(workflow="aws_units.waits", input=what, seq=1)
    decision = replay(_waits, [started], [], datetime.now(UTC), instance_id="i")
    assert decision.waits_on_others is others


@workflow(name="aws_units.activity_after_event")
def activity_after_event(ctx: Context, _: None) -> Any:
    both = yield ctx.all([ctx.call(remote, 2), ctx.wait_for_event("go")])
    return both


def test_an_attempt_in_flight_too_long_is_dispatched_again() -> None:
    from durable.history import EventMessage

    store, clock = _CountingStore(), VirtualClock()
    iid = _start(store, activity_after_event, None, clock)
    first = _orchestrate(store, iid, clock)
    assert first.next == "park" and len(first.activities) == 1  # started asynchronously
    store.post(iid, EventMessage(event="go", data=1, received_at=clock.now()))
    woken = _orchestrate(store, iid, clock)  # the event came; the attempt is still out
    assert woken.next == "park" and woken.activities == []
    assert 900 <= woken.wait_seconds <= 960  # looked at again once it would be lost
    clock.advance_to(clock.now() + timedelta(seconds=woken.wait_seconds))
    again = _orchestrate(store, iid, clock)
    assert again.next == "park" and again.activities == first.activities
    assert store.history_reads == 0  # the attempts' ages come with them, not from the history
    [noted] = [e for e in store.history(iid) if e.kind == "ActivityRedispatched"]
    assert (noted.task_id, noted.attempt) == (first.activities[0].task_id, 1)
    assert clock.now() - noted.timestamp < timedelta(seconds=1)  # by the call that found it
    # A call before the new invocation answered (a repark's fresh task, another event):
    # the attempt's lost clock restarted when it was dispatched again, so it waits.
    clock.advance_to(clock.now() + timedelta(seconds=5))
    fresh = _orchestrate(store, iid, clock)
    assert fresh.next == "park" and fresh.activities == []
    assert 900 <= fresh.wait_seconds <= 960
    _run_all(store, clock, again)
    assert _orchestrate(store, iid, clock).next == "succeed"
    assert store.get(iid).output == [20, 1]  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- waiting on activities


@workflow(name="aws_units.remote_chain")
def remote_chain(ctx: Context, n: int) -> Any:
    value = 1
    for _ in range(n):
        value = yield ctx.call(remote, value)
    return value


class _ActivityLambda:
    """The activity Lambda invoked synchronously: runs each attempt, answers or goes silent.

    ``silent`` task ids stand for attempts still running when the wait ends
    (they post their outcome later, which the test does by hand).
    """

    def __init__(
        self, store: MemoryStore, clock: VirtualClock, silent: frozenset[int] = frozenset()
    ) -> None:
        self.store, self.clock, self.silent = store, clock, silent
        self.rounds: list[list[int]] = []
        self.waited: list[float] = []

    def call(self, works: Any, seconds: float) -> list[Any]:
        self.rounds.append([w.task_id for w in works])
        self.waited.append(seconds)
        return [
            None
            if w.task_id in self.silent
            else run_referenced_attempt(self.store, ActivityRef.of(w), self.clock, None, post=False)
            for w in works
        ]


def test_activities_waited_for_are_recorded_by_the_next_step_without_the_loop() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, remote_chain, 4, clock)
    lam = _ActivityLambda(store, clock)

    decision = _orchestrate(store, iid, clock, dispatcher=lam, inline_seconds=3.0)

    assert decision.next == "succeed" and decision.steps == 5
    assert store.get(iid).output == 10_000  # type: ignore[union-attr]
    assert len(lam.rounds) == 4 and lam.waited == [3.0] * 4
    kinds = [e.kind for e in store.history(iid)]
    assert kinds.count("ActivityScheduled") == kinds.count("ActivityCompleted") == 4
    assert store.load(iid).inbox == []  # carried into commits, never posted


def test_an_activity_still_running_when_the_wait_ends_parks_the_loop_for_its_post() -> None:
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, remote_chain, 1, clock)
    lam = _ActivityLambda(store, clock, silent={1})

    parked = _orchestrate(store, iid, clock, dispatcher=lam, inline_seconds=3.0)

    assert parked.next == "park" and parked.activities == []  # running: not started again
    assert 900 <= parked.wait_seconds <= 960  # looked at again once it would be lost
    [task_id] = lam.rounds[0]
    run_referenced_attempt(store, ActivityRef(iid, 1, task_id, 1), clock, None)  # it posts
    assert _orchestrate(store, iid, clock).next == "succeed"


def test_no_waiting_without_time_for_it() -> None:
    from durable.runtime.aws_loop import TIME_MARGIN_SECONDS

    store, clock = MemoryStore(), VirtualClock()
    lam = _ActivityLambda(store, clock)
    short = _start(store, remote_chain, 1, clock)
    low = _orchestrate(
        store, short, clock, left=TIME_MARGIN_SECONDS, dispatcher=lam, inline_seconds=3.0
    )

    assert lam.rounds == []
    assert low.next == "park" and len(low.activities) == 1


def test_a_wide_round_is_invoked_in_waves() -> None:
    from durable.runtime.aws_loop import INLINE_MAX_ACTIVITIES

    store, clock = MemoryStore(), VirtualClock()
    lam = _ActivityLambda(store, clock)
    wide = _start(store, fan_out, 2 * INLINE_MAX_ACTIVITIES + 1, clock)

    done = _orchestrate(store, wide, clock, dispatcher=lam, inline_seconds=3.0)

    assert [len(r) for r in lam.rounds] == [INLINE_MAX_ACTIVITIES, INLINE_MAX_ACTIVITIES, 1]
    assert done.next == "succeed" and done.steps == 2  # one commit took every outcome
    assert store.get(wide).output == 10 * sum(range(2 * INLINE_MAX_ACTIVITIES + 1))  # type: ignore[union-attr]


def test_once_an_attempt_outlasts_a_wave_the_rest_are_started_without_waiting() -> None:
    from durable.runtime.aws_loop import INLINE_MAX_ACTIVITIES

    store, clock = MemoryStore(), VirtualClock()
    wide = _start(store, fan_out, INLINE_MAX_ACTIVITIES + 10, clock)
    first_task = 1  # the first activity of the round (task ids count from 1)
    lam = _ActivityLambda(store, clock, silent=frozenset({first_task}))

    parked = _orchestrate(store, wide, clock, dispatcher=lam, inline_seconds=3.0)

    assert [len(r) for r in lam.rounds] == [INLINE_MAX_ACTIVITIES]
    assert parked.next == "park"
    started = {ref.task_id for ref in parked.activities}
    assert len(started) == 10 and not started & set(lam.rounds[0])


@workflow(name="aws_units.fan_out")
def fan_out(ctx: Context, n: int) -> Any:
    return sum((yield ctx.all([ctx.call(remote, i) for i in range(n)])))


def test_an_attempt_invoked_here_is_not_taken_for_lost_while_it_runs() -> None:
    """Even when it was started long ago (recovery): it posts its outcome itself."""
    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, remote_chain, 1, clock)
    lam = _ActivityLambda(store, clock, silent={1})

    parked = _orchestrate(store, iid, clock, dispatcher=lam, inline_seconds=3.0, lost_after=0)

    assert len(lam.rounds) == 1
    assert parked.next == "park" and parked.activities == []


# ----------------------------------------------------------------------------- the activity handler


class _CountingStore(MemoryStore):
    """A MemoryStore that counts history reads (what an activity invocation costs in reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.history_reads = 0

    def history(self, instance_id: str, run: int | None = None) -> Any:
        self.history_reads += 1
        return super().history(instance_id, run=run)


@pytest.fixture
def activity_lambda(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``activity_handler`` with a MemoryStore behind it (no AWS call is made on this path)."""
    from durable.runtime import aws, aws_config
    from tests.aws_harness import _FakeContext

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "durable")
    store, clock = _CountingStore(), VirtualClock()
    aws_config.configure(store_factory=lambda settings, waker: store, clock=clock)  # type: ignore[arg-type,return-value]

    def invoke(event: dict[str, Any]) -> Any:
        return aws.activity_handler(event, _FakeContext("stack-activity", 60))

    yield store, clock, invoke
    aws_config.reset()


def test_an_attempt_waited_for_answers_with_its_outcome_and_posts_nothing(
    activity_lambda: Any,
) -> None:
    from durable.history import message_from_json

    store, clock, invoke = activity_lambda
    iid = _start(store, remote_chain, 1, clock)
    [ref] = _orchestrate(store, iid, clock).activities

    reply = invoke({**vars(ref), "reply_by": time.time() + 30})

    assert reply["status"] == "completed"
    assert message_from_json(reply["outcome"]).result == 10
    assert store.load(iid).inbox == []


def test_an_attempt_finishing_after_the_wait_posts_its_outcome(activity_lambda: Any) -> None:
    store, clock, invoke = activity_lambda
    iid = _start(store, remote_chain, 1, clock)
    [ref] = _orchestrate(store, iid, clock).activities

    reply = invoke({**vars(ref), "reply_by": time.time() + 0.2})  # inside the reply margin

    assert reply == {"status": "completed"}
    [posted] = store.load(iid).inbox
    assert posted.result == 10
    assert _orchestrate(store, iid, clock).next == "succeed"


def test_an_attempt_started_without_a_wait_posts_its_outcome(activity_lambda: Any) -> None:
    store, clock, invoke = activity_lambda
    iid = _start(store, remote_chain, 1, clock)
    [ref] = _orchestrate(store, iid, clock).activities

    assert invoke(vars(ref)) == {"status": "completed"}
    assert [m.result for m in store.load(iid).inbox] == [10]


def test_an_attempt_carried_whole_runs_without_reading_the_history(activity_lambda: Any) -> None:
    from durable.history import message_from_json

    store, clock, invoke = activity_lambda
    iid = _start(store, remote_chain, 1, clock)
    lam = _ActivityLambda(store, clock, silent={1})
    _orchestrate(store, iid, clock, dispatcher=lam, inline_seconds=3.0)
    [task_id] = lam.rounds[0]
    ref = ActivityRef(iid, 1, task_id, 1)
    scheduled = next(e for e in store.history(iid) if e.kind == "ActivityScheduled")
    carried = {"activity": scheduled.activity, "input": scheduled.input}  # no timeout: None
    reads = store.history_reads

    reply = invoke({**vars(ref), "reply_by": time.time() + 30, "work": carried})

    assert store.history_reads == reads
    assert message_from_json(reply["outcome"]).result == 10


@pytest.mark.filterwarnings("ignore:No application metrics")  # powertools, on the way out
def test_a_malformed_carried_attempt_is_refused_by_name(activity_lambda: Any) -> None:
    _, _, invoke = activity_lambda
    ref = {"instance_id": "i", "run": 1, "task_id": 1, "attempt": 1, "reply_by": time.time() + 30}

    with pytest.raises(ValueError, match="not a carried activity attempt"):
        invoke({**ref, "work": {"input": []}})


def test_a_park_on_several_attempts_waits_a_moment_once_woken() -> None:
    from durable.runtime.aws_loop import FAN_IN_SECONDS

    store, clock = MemoryStore(), VirtualClock()
    several = _start(store, fan_out, 3, clock)
    one = _start(store, remote_chain, 1, clock)

    parked_on_three = _orchestrate(store, several, clock)
    parked_on_one = _orchestrate(store, one, clock)

    assert parked_on_three.next == parked_on_one.next == "park"
    assert parked_on_three.woken_wait == FAN_IN_SECONDS
    assert parked_on_one.woken_wait == 0
    # woken by one of the three outcomes, the next step still waits on two: wait again
    _run_all(store, clock, LoopDecision("park", parked_on_three.activities[:1]))
    assert _orchestrate(store, several, clock).woken_wait == FAN_IN_SECONDS


def test_a_recovery_records_dispatching_an_attempt_that_was_already_lost() -> None:
    """A recovery dispatches every pending attempt again; one already lost is recorded as
    dispatched again, so the call after it (a repark's fresh task) does not dispatch it a
    third time. A recent one is just dispatched: nothing says it was lost."""
    store, clock = MemoryStore(), VirtualClock()
    old = _start(store, remote_chain, 1, clock)
    first = _orchestrate(store, old, clock)  # the attempt goes out, and is lost
    clock.advance_to(clock.now() + timedelta(seconds=first.wait_seconds + 60))
    young = _start(store, remote_chain, 1, clock)
    _orchestrate(store, young, clock)

    recovered = [_orchestrate(store, iid, clock, recover=True) for iid in (old, young)]
    assert [r.activities for r in recovered] == [first.activities, recovered[1].activities]
    assert [len(r.activities) for r in recovered] == [1, 1]  # every pending attempt goes out
    kinds = {iid: [e.kind for e in store.history(iid)] for iid in (old, young)}
    assert kinds[old].count("ActivityRedispatched") == 1
    assert "ActivityRedispatched" not in kinds[young]
    fresh = _orchestrate(store, old, clock)
    assert fresh.next == "park" and fresh.activities == []


def test_no_lost_note_is_kept_when_the_step_that_would_record_it_ends_stuck() -> None:
    """The call found the attempt lost, then could not step (here its workflow is gone): it
    dispatches nothing, so nothing may later record a dispatch that was not made."""
    import itertools

    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, remote_chain, 1, clock)
    first = _orchestrate(store, iid, clock)  # the attempt goes out, and is lost
    clock.advance_to(clock.now() + timedelta(seconds=first.wait_seconds))
    resolved = itertools.count()

    def resolve_once(name: str) -> Workflow[Any, Any]:
        if next(resolved) == 0:
            return get_workflow(name)
        raise UnknownWorkflowError(name)  # a deploy removed it while this call ran

    stuck = _orchestrate(store, iid, clock, resolve=resolve_once)

    assert stuck.next == "sleep" and stuck.activities == []
    assert store.load(iid).inbox == []
    assert "ActivityRedispatched" not in [e.kind for e in store.history(iid)]


def test_an_attempt_whose_invocations_keep_dying_is_recorded_as_failed() -> None:
    """Dispatched LOST_GIVE_UP_PERIODS times without an outcome: the retry policy decides."""
    from durable.history import EventMessage
    from durable.runtime.aws_loop import LOST_GIVE_UP_PERIODS

    store, clock = MemoryStore(), VirtualClock()
    iid = _start(store, activity_after_event, None, clock)
    first = _orchestrate(store, iid, clock)
    store.post(iid, EventMessage(event="go", data=1, received_at=clock.now()))
    woken = _orchestrate(store, iid, clock)  # the event; the attempt is still out
    assert woken.next == "park" and woken.activities == []
    clock.advance_to(clock.now() + timedelta(seconds=woken.wait_seconds))
    dispatched = [first.activities]
    for _ in range(LOST_GIVE_UP_PERIODS - 1):  # every invocation dies: nothing is posted
        again = _orchestrate(store, iid, clock)
        assert again.next == "park" and again.activities == first.activities
        dispatched.append(again.activities)
        clock.advance_to(clock.now() + timedelta(seconds=again.wait_seconds))

    ended = _orchestrate(store, iid, clock)

    assert len(dispatched) == LOST_GIVE_UP_PERIODS
    assert ended.next == "fail"  # no retry policy: the workflow's call raised
    [failed] = [e for e in store.history(iid) if e.kind == "ActivityFailed"]
    assert failed.error.type.endswith("ActivityCrashed")
    assert "dispatched 3 times" in failed.error.message
    kinds = [e.kind for e in store.history(iid)]
    assert kinds.count("ActivityRedispatched") == LOST_GIVE_UP_PERIODS - 1
