"""The shared step (durable.runtime.step): live runs kept between steps, carried outcomes.

Real engine and MemoryStore; the driver here is the test, running activities itself.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from durable import Context, Status, activity, workflow
from durable.errors import UnknownWorkflowError
from durable.history import ActivityCompleted, Message
from durable.runtime.activity import run_activity
from durable.runtime.start import create_instance, encode_input
from durable.runtime.step import LiveRuns, step
from durable.store import MemoryStore
from durable.testing import EPOCH
from durable.workflow import Workflow, get_workflow

closed: list[str] = []


@activity(name="step_t.add")
def add(x: int) -> int:
    return x + 1


@workflow(name="step_t.chain")
def chain(ctx: Context, n: int) -> Generator[Any, Any, int]:
    value = 0
    try:
        for _ in range(n):
            value = yield ctx.call(add, value)
    finally:
        closed.append(ctx.instance_id)
    return value


def _start(store: MemoryStore, wf: Workflow[Any, Any], value: Any, iid: str) -> str:
    created, _ = create_instance(store, wf, encode_input(wf, value), iid, EPOCH)
    return created


def _unknown(name: str) -> Workflow[Any, Any]:
    raise UnknownWorkflowError(name)


def test_carried_outcomes_are_committed_by_the_step_without_being_posted() -> None:
    store = MemoryStore()
    iid = _start(store, chain, 2, "c")
    first = step(store, iid, get_workflow, EPOCH)
    assert first is not None and len(first.dispatch) == 1
    carried: list[Message] = [run_activity(first.dispatch[0], lambda: EPOCH)]

    second = step(store, iid, get_workflow, EPOCH, carried=carried)

    assert carried == []  # taken
    assert second is not None and len(second.dispatch) == 1
    assert any(isinstance(e, ActivityCompleted) for e in store.history(iid))
    assert store.load(iid).inbox == []  # never posted
    again: list[Message] = [run_activity(first.dispatch[0], lambda: EPOCH)]  # a duplicate
    step(store, iid, get_workflow, EPOCH, carried=again)
    assert again == []  # dropped as stale, nothing recorded twice
    assert sum(isinstance(e, ActivityCompleted) for e in store.history(iid)) == 1


def test_carried_outcomes_a_stuck_step_cannot_take_stay_with_the_driver() -> None:
    store = MemoryStore()
    iid = _start(store, chain, 2, "s")
    first = step(store, iid, get_workflow, EPOCH)
    assert first is not None
    carried: list[Message] = [run_activity(first.dispatch[0], lambda: EPOCH)]

    stuck = step(store, iid, _unknown, EPOCH, carried=carried)

    assert stuck is not None and stuck.status == Status.STUCK
    assert len(carried) == 1
    done = step(store, iid, get_workflow, EPOCH, carried=carried)
    assert done is not None and carried == []


def test_a_live_run_is_resumed_and_an_evicted_one_is_closed() -> None:
    store = MemoryStore()
    live = LiveRuns(capacity=1)
    a, b = _start(store, chain, 3, "live-a"), _start(store, chain, 3, "live-b")
    closed.clear()
    decision_a = step(store, a, get_workflow, EPOCH, live_runs=live)
    assert decision_a is not None and live.misses == 1 and len(live) == 1
    carried: list[Message] = [run_activity(decision_a.dispatch[0], lambda: EPOCH)]
    step(store, a, get_workflow, EPOCH, live_runs=live, carried=carried)
    assert live.hits == 1  # resumed, not replayed

    step(store, b, get_workflow, EPOCH, live_runs=live)  # evicts a's run

    assert closed == [a]  # its finally ran at eviction, not at garbage collection
    assert len(live) == 1
    live.clear()
    assert closed == [a, b]
