"""Property test: a random workflow, interrupted at random points, ends as an uninterrupted run.

A single interpreter workflow (``rel_program``, shared with the fault-injection
harness in ``tests/reliability/harness.py``) runs a random list of operations
(calls that fail some attempts, with or without retries; sleeps; ``all`` and
``any`` groups; event waits, with and without timeouts; side effects). A
deterministic driver runs it on the real step function over a
``MemoryStore``, running activities itself and moving a fake clock to the
next wake-up when nothing else can happen. The chaotic driver additionally
replays and drops uncommitted decisions, re-steps from scratch, loses
activity results (a crash between running an activity and posting its
outcome) and delivers results twice or late. Both must end with the same
result and the same history, and no activity whose outcome was recorded may
run again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import Status
from durable.codec import encode
from durable.history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityResult,
    ActivityRetryScheduled,
    AttemptLost,
    Event,
    EventMessage,
    WorkflowStarted,
    new_message_id,
)
from durable.replay import ActivityWork, Decision, replay
from durable.runtime.activity import run_activity
from durable.runtime.step import LiveRuns, step
from durable.store.memory import MemoryStore
from durable.testing import EPOCH, replay_history
from durable.workflow import Workflow
from tests.reliability.harness import rel_program, without_redispatches

IID = "prop-1"
MAX_ROUNDS = 400


# ----------------------------------------------------------------------------- programs


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    attempts = draw(st.integers(1, 3))
    return {
        "op": "call",
        "fail": draw(st.integers(0, 3)),
        "attempts": attempts,
        "interval": draw(st.sampled_from([0, 1, 5])),
    }


sleeps = st.builds(lambda s: {"op": "sleep", "seconds": s}, st.sampled_from([0, 1, 7, 60]))
event_items = st.builds(
    lambda when: {"op": "event", "when": when, "timeout": None},
    st.sampled_from(["early", "waiting", "never"]),
)


@st.composite
def operations(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["call", "call", "sleep", "all", "any", "event", "effect"]))
    if kind == "call":
        return draw(calls())
    if kind == "sleep":
        return draw(sleeps)
    if kind == "all":
        return {"op": "all", "items": draw(st.lists(calls(), min_size=0, max_size=3))}
    if kind == "any":
        items = draw(st.lists(calls() | sleeps | event_items, min_size=1, max_size=3))
        if any(i["op"] == "event" for i in items) and all(i["op"] != "sleep" for i in items):
            items.append({"op": "sleep", "seconds": 60})  # so that the group always ends
        return {"op": "any", "items": items}
    if kind == "event":
        when = draw(st.sampled_from(["early", "waiting", "never"]))
        timeout = draw(st.sampled_from([None, 30])) if when != "never" else 30
        return {"op": "event", "when": when, "timeout": timeout}
    return {"op": "effect"}


@st.composite
def programs(draw: st.DrawFn) -> list[dict[str, Any]]:
    spec = draw(st.lists(operations(), min_size=1, max_size=7))
    if draw(st.integers(0, 9)) == 0:
        spec.append({"op": "fail"})
    counter = 0
    for op in spec:  # unique activity keys and event names, so outcomes are traceable
        for item in [op, *op.get("items", [])]:
            if item["op"] == "call":
                item["key"] = f"k{counter}"
                counter += 1
            elif item["op"] == "event":
                item["name"] = f"e{counter}"
                counter += 1
    return spec


# ----------------------------------------------------------------------------- driver


@dataclass
class Outcome:
    status: Status
    output: Any
    error_type: str | None
    history: list[Event]
    runs: list[tuple[int, int]] = field(default_factory=list)
    """Every activity attempt run, as (task id, attempt)."""
    resumed: int = 0
    """Steps that resumed a live run instead of replaying."""


def _resolve(name: str) -> Workflow[Any, Any]:
    assert name == rel_program.name
    return rel_program


def _recorded_outcome(history: list[Event], task_id: int, attempt: int) -> Event | None:
    for event in history:
        if isinstance(event, ActivityCompleted | ActivityFailed) and event.task_id == task_id:
            return event
        if (
            isinstance(event, ActivityRetryScheduled)
            and event.task_id == task_id
            and event.attempt == attempt
        ):
            return event
    return None


def drive(
    spec: list[dict[str, Any]], chaos_seed: int | None = None, *, live: bool = False
) -> Outcome:
    """Run ``spec`` to its end; with ``chaos_seed``, interrupt it at random points.

    With ``live``, steps resume the generator kept from the step before
    (:class:`LiveRuns`), and every such decision is checked against a full
    replay of the same snapshot.
    """
    live_runs = LiveRuns() if live else None

    def step_once() -> Decision | None:
        if live_runs is None:
            return step(store, IID, _resolve, now)
        snap = store.load(IID)
        expected = (
            None
            if snap.header.status.is_terminal and not snap.inbox
            else replay(rel_program, snap.history, snap.inbox, now, instance_id=IID)
        )
        decision = step(store, IID, _resolve, now, live_runs=live_runs)
        assert decision == expected
        if decision is not None and expected is not None:  # (not compared by ==)
            assert _dispatch_times(decision) == _dispatch_times(expected)
        return decision

    chaos = random.Random(chaos_seed) if chaos_seed is not None else None

    def hit(p: float) -> bool:
        return chaos is not None and chaos.random() < p

    store = MemoryStore()
    now = EPOCH
    document = encode({"ops": spec})
    store.create(IID, WorkflowStarted(workflow=rel_program.name, input=document, timestamp=now))
    events = [i for op in spec for i in [op, *op.get("items", [])] if i["op"] == "event"]
    for op in events:
        if op["when"] == "early":
            store.post(IID, EventMessage(event=op["name"], data=op["name"], received_at=now))
    raised = {op["name"] for op in events if op["when"] != "waiting"}
    runs: list[tuple[int, int]] = []
    delivered: list[ActivityResult] = []
    # Attempts to run, in the order they were dispatched. An attempt whose result
    # was lost stays at the front, as a worker queue redelivering it would keep it.
    queue: list[ActivityWork] = []

    def absorb(decision: Decision) -> None:
        known = {(w.task_id, w.attempt) for w in queue}
        queue.extend(w for w in decision.dispatch if (w.task_id, w.attempt) not in known)
        pending = {(w.task_id, w.attempt) for w in decision.pending}
        queue[:] = [w for w in queue if (w.task_id, w.attempt) in pending]

    for _ in range(MAX_ROUNDS):
        if hit(0.3):  # a step that crashed before its commit: its decision is lost
            snap = store.load(IID)
            replay(rel_program, snap.history, snap.inbox, now, instance_id=IID)
        decision = step_once()
        assert decision is not None
        absorb(decision)
        if hit(0.2):  # the driver crashed after the commit and steps again from scratch
            again = step_once()
            if again is None:  # the instance had ended: nothing left to do
                assert decision.status.is_terminal
            else:
                decision = again
                absorb(decision)
        if decision.status.is_terminal:
            break
        assert decision.status == Status.RUNNING, decision.error
        if decision.more:
            continue
        if queue and hit(0.15):  # an AWS loop found an attempt lost: dispatched again
            lost = queue[0]
            note = AttemptLost(task_id=lost.task_id, run=1, attempt=lost.attempt, received_at=now)
            store.post(IID, note)
        if delivered and hit(0.2):  # a late duplicate of an old outcome
            late = chaos.choice(delivered) if chaos is not None else delivered[0]
            store.post(IID, late.model_copy(update={"id": new_message_id()}))
        if queue:
            todo = list(queue)
            crash_at = chaos.randrange(len(todo)) if chaos is not None and hit(0.25) else None
            history = store.history(IID)
            for i, item in enumerate(todo):
                recorded = _recorded_outcome(history, item.task_id, item.attempt)
                assert recorded is None, f"attempt {item} ran again after {recorded}"
                result = run_activity(item, now=_clock(now))
                runs.append((item.task_id, item.attempt))
                if crash_at is not None and i >= crash_at:
                    continue  # ran, but the worker died before posting: it runs again
                store.post(IID, result)
                delivered.append(result)
                if hit(0.3):  # delivered twice
                    store.post(IID, result.model_copy(update={"id": new_message_id()}))
            continue
        waiting = [
            op["name"]
            for op in events
            if op["name"] not in raised and f"event {op['name']!r}" in decision.waiting_on
        ]
        if waiting:
            raised.add(waiting[0])
            store.post(IID, EventMessage(event=waiting[0], data=waiting[0], received_at=now))
            continue
        assert decision.wake_at is not None, f"no progress possible: {decision.waiting_on}"
        now = max(now, decision.wake_at)
    else:
        raise AssertionError("the workflow did not end")

    header = store.get(IID)
    assert header is not None
    return Outcome(
        status=header.status,
        output=header.output,
        error_type=header.error.type if header.error else None,
        history=store.history(IID),
        runs=runs,
        resumed=live_runs.hits if live_runs is not None else 0,
    )


# ----------------------------------------------------------------------------- properties


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=programs(), seed=st.integers(0, 2**32 - 1))
def test_interrupted_runs_end_like_an_uninterrupted_run(
    spec: list[dict[str, Any]], seed: int
) -> None:
    clean = drive(spec)
    assert clean.status in (Status.COMPLETED, Status.FAILED)
    # the uninterrupted run runs every attempt exactly once
    assert len(clean.runs) == len(set(clean.runs))

    for live in (False, True):
        chaotic = drive(spec, chaos_seed=seed, live=live)
        assert (chaotic.status, chaotic.output, chaotic.error_type) == (
            clean.status,
            clean.output,
            clean.error_type,
        )
        assert without_redispatches(chaotic.history) == without_redispatches(clean.history)

    # the recorded history replays against the code without non-determinism
    end = replay_history(rel_program, clean.history, instance_id=IID)
    assert end.status == clean.status


def _dispatch_times(decision: Decision) -> list[tuple[Any, ...]]:
    return [(w.scheduled_at, w.dispatched_at, w.dispatches) for w in decision.pending]


def test_the_driver_sees_failures_retries_and_timeouts() -> None:
    """A fixed program exercising every path, so the property is not vacuous."""
    spec: list[dict[str, Any]] = [
        {"op": "call", "key": "a", "fail": 1, "attempts": 3, "interval": 5},
        {"op": "call", "key": "b", "fail": 2, "attempts": 2, "interval": 0},
        {"op": "event", "name": "late", "when": "never", "timeout": 30},
        {"op": "event", "name": "soon", "when": "waiting", "timeout": None},
        {
            "op": "any",
            "items": [
                {"op": "sleep", "seconds": 60},
                {"op": "call", "key": "c", "fail": 0, "attempts": 1, "interval": 0},
            ],
        },
        {"op": "effect"},
    ]
    clean = drive(spec)
    assert clean.status == Status.COMPLETED
    assert clean.output[:5] == [
        "a@2",
        "error: b failed attempt 2",
        "timed out",
        "soon",
        [1, "c@1"],
    ]
    redispatched = 0
    for seed in range(5):
        for live_chaos in (False, True):
            chaotic = drive(spec, chaos_seed=seed, live=live_chaos)
            assert chaotic.output == clean.output
            assert without_redispatches(chaotic.history) == without_redispatches(clean.history)
            redispatched += sum(e.kind == "ActivityRedispatched" for e in chaotic.history)
    assert redispatched > 0  # lost attempts were noted, and resumed runs agreed with replay
    live = drive(spec, live=True)
    assert live.history == clean.history
    assert live.resumed >= 5


def _clock(at: datetime) -> Callable[[], datetime]:
    """A clock standing still at ``at`` (activities stamp their results with it)."""
    return lambda: at
