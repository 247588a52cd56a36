"""The HistoryStore contract, checked against every store (the ``store`` fixture in conftest.py).

Tests build :class:`~durable.replay.Decision` values directly, or get
realistic ones from :func:`durable.replay.replay` on tiny workflows. Tests
at the end are specific to SQLite: sharing one file, reopening it, writers
racing from threads and processes, and ``open_store`` URLs.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durable import Context, activity, workflow
from durable.codec import ErrorInfo
from durable.errors import ConfigurationError, ConflictError, InstanceNotFoundError
from durable.history import (
    ActivityCompleted,
    ActivityResult,
    CancelMessage,
    ChildCompleted,
    ChildResult,
    ChildScheduled,
    Event,
    EventMessage,
    InstanceStatus,
    Message,
    Status,
    StatusSet,
    TerminateMessage,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
)
from durable.replay import ChildStart, Decision, OutgoingMessage, replay
from durable.store import HistoryStore, MemoryStore, SQLiteStore, open_store

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
UNFINISHED = (Status.PENDING, Status.RUNNING, Status.STUCK)
TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELED, Status.TERMINATED)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(
    workflow: str = "store_t_wf",
    input: Any = None,
    *,
    when: datetime = T0,
    parent: tuple[str, int] | None = None,
) -> WorkflowStarted:
    return WorkflowStarted(
        workflow=workflow,
        input=input,
        seq=1,
        timestamp=when,
        parent_id=parent[0] if parent else None,
        parent_task_id=parent[1] if parent else None,
        parent_run=1 if parent else None,
    )


def create(
    store: HistoryStore,
    instance_id: str,
    workflow: str = "store_t_wf",
    input: Any = None,
    *,
    when: datetime = T0,
) -> WorkflowStarted:
    first = started(workflow, input, when=when)
    assert store.create(instance_id, first)
    return first


def event(index: int, value: Any = None) -> StatusSet:
    """Some event; ``advance`` gives it its ``seq``."""
    return StatusSet(value=value if value is not None else f"event {index}", timestamp=at(index))


def message(message_id: str, data: Any = None) -> EventMessage:
    return EventMessage(id=message_id, event="poke", data=data, received_at=T0)


def decision_for(
    snapshot_history: Sequence[Event],
    instance_id: str,
    *,
    run: int = 1,
    events: Sequence[Event] = (),
    status: Status = Status.RUNNING,
    now: datetime | None = None,
    **fields: Any,
) -> Decision:
    """A decision appending ``events`` (numbered after ``snapshot_history``)."""
    last = snapshot_history[-1].seq
    numbered = [e.model_copy(update={"seq": last + i + 1}) for i, e in enumerate(events)]
    return Decision(
        instance_id=instance_id,
        run=run,
        status=status,
        at=now or at(60),
        events=numbered,
        **fields,
    )


def advance(
    store: HistoryStore,
    instance_id: str,
    *events: Event,
    status: Status = Status.RUNNING,
    now: datetime | None = None,
    **fields: Any,
) -> int:
    """Load, then commit a decision appending ``events``; return the new version."""
    snapshot = store.load(instance_id)
    decision = decision_for(
        snapshot.history,
        instance_id,
        run=snapshot.header.run,
        events=events,
        status=status,
        now=now,
        **fields,
    )
    return store.commit(decision, expected_version=snapshot.version)


def inbox_ids(store: HistoryStore, instance_id: str) -> list[str]:
    return [m.id for m in store.load(instance_id).inbox]


def finish(store: HistoryStore, instance_id: str, status: Status = Status.COMPLETED) -> None:
    advance(store, instance_id, event(90), status=status, output="done")


# ----------------------------------------------------------------------------- create


def test_create_stores_the_first_event_and_a_pending_header(store: HistoryStore) -> None:
    first = started("store_t_wf", {"n": 1})

    assert store.create("a", first) is True

    header = store.get("a")
    assert header is not None
    assert header.instance_id == "a"
    assert header.workflow == "store_t_wf"
    assert header.status == Status.PENDING
    assert header.version == 1
    assert header.run == 1
    assert header.input == {"n": 1}
    assert header.output is None and header.error is None and header.custom_status is None
    assert header.created_at == T0 and header.updated_at == T0
    assert header.wake_at is None and header.parent_id is None
    assert store.history("a") == [first]
    snapshot = store.load("a")
    assert snapshot.header == header
    assert snapshot.history == [first]
    assert snapshot.inbox == []
    assert snapshot.version == 1


def test_create_records_the_parent_of_a_child(store: HistoryStore) -> None:
    assert store.create("kid", started(parent=("mom", 3)))

    header = store.get("kid")
    assert header is not None and header.parent_id == "mom"
    first = store.history("kid")[0]
    assert isinstance(first, WorkflowStarted)
    assert (first.parent_id, first.parent_task_id, first.parent_run) == ("mom", 3, 1)


def test_create_twice_returns_false_and_changes_nothing(store: HistoryStore) -> None:
    first = create(store, "a", "store_t_wf", {"n": 1})
    advance(store, "a", event(1), custom_status="busy")
    store.post("a", message("m1"))
    before = store.load("a")

    assert store.create("a", started("store_t_other", {"n": 2}, when=at(5))) is False

    after = store.load("a")
    assert after == before
    assert after.history[0] == first


def test_ids_are_exact_not_prefixes_or_case_insensitive(store: HistoryStore) -> None:
    create(store, "a", input="plain")
    create(store, "a:1", input="suffixed")
    create(store, "A", input="upper")
    store.post("a:1", message("m"))

    assert store.delete("a") is True

    assert store.get("a") is None
    assert store.history("a:1") == [started(input="suffixed")]
    assert inbox_ids(store, "a:1") == ["m"]
    header = store.get("A")
    assert header is not None and header.input == "upper"


# ----------------------------------------------------------------------------- load


def test_load_returns_history_in_seq_order_across_commits(store: HistoryStore) -> None:
    create(store, "a")
    advance(store, "a", event(1), event(2))
    advance(store, "a", event(3))

    history = store.load("a").history

    assert [e.seq for e in history] == [1, 2, 3, 4]
    assert [getattr(e, "value", None) for e in history[1:]] == ["event 1", "event 2", "event 3"]
    assert store.history("a") == history


def test_load_after_returns_only_the_newer_events_with_the_full_header_and_inbox(
    store: HistoryStore,
) -> None:
    create(store, "a")
    advance(store, "a", event(1), event(2))
    advance(store, "a", event(3))
    store.post("a", message("m"))
    full = store.load("a")

    tail = store.load("a", after=2)

    assert [e.seq for e in tail.history] == [3, 4]
    assert tail.history == full.history[2:]
    assert tail.header == full.header
    assert [m.id for m in tail.inbox] == ["m"]
    assert store.load("a", after=4).history == []
    assert store.load("a", after=0).history == full.history
    assert store.load("a", after=None).history == full.history


def test_load_after_reads_the_current_run_only(store: HistoryStore) -> None:
    create(store, "a")
    advance(store, "a", event(1), event(2), event(3))
    snapshot = store.load("a")
    next_run = started(input="second").model_copy(update={"run": 2})
    decision = Decision(instance_id="a", run=1, status=Status.RUNNING, at=at(2), next_run=next_run)
    store.commit(decision, expected_version=snapshot.version)

    tail = store.load("a", after=1)

    assert tail.header.run == 2
    assert tail.history == []  # run 2 holds only its WorkflowStarted, seq 1
    assert store.load("a").history == [next_run]


def test_load_orders_events_by_seq_even_if_a_decision_lists_them_out_of_order(
    store: HistoryStore,
) -> None:
    create(store, "a")
    snapshot = store.load("a")
    decision = Decision(
        instance_id="a",
        run=1,
        status=Status.RUNNING,
        at=at(1),
        events=[StatusSet(seq=3, value="third"), StatusSet(seq=2, value="second")],
    )

    store.commit(decision, expected_version=snapshot.version)

    assert [e.seq for e in store.load("a").history] == [1, 2, 3]


def test_load_returns_the_inbox_in_arrival_order(store: HistoryStore) -> None:
    create(store, "a")
    arrival = ["z", "m", "a", "y", "b"]  # ids that sort in another order than they arrive
    for mid in arrival:
        assert store.post("a", message(mid, data=mid)) is True

    inbox = store.load("a").inbox

    assert [m.id for m in inbox] == arrival
    assert inbox[0] == message("z", data="z")


def test_unknown_ids(store: HistoryStore) -> None:
    assert store.get("nope") is None
    assert store.delete("nope") is False
    with pytest.raises(InstanceNotFoundError, match="nope"):
        store.load("nope")
    with pytest.raises(InstanceNotFoundError, match="nope"):
        store.history("nope")
    with pytest.raises(InstanceNotFoundError, match="nope"):
        store.post("nope", message("m"))
    with pytest.raises(InstanceNotFoundError, match="nope"):
        store.commit(decision_for([started()], "nope", events=[event(1)]), expected_version=1)
    assert store.list_instances() == []


# ----------------------------------------------------------------------------- commit


def test_commit_appends_events_and_bumps_the_version(store: HistoryStore) -> None:
    first = create(store, "a")

    version = advance(store, "a", event(1), event(2))

    assert version == 2
    history = store.history("a")
    assert history[0] == first
    assert [type(e) for e in history] == [WorkflowStarted, StatusSet, StatusSet]
    assert store.load("a").version == 2
    assert advance(store, "a", event(3)) == 3


def test_commit_updates_every_header_field(store: HistoryStore) -> None:
    create(store, "a", input={"in": 1})
    wake = at(3600)

    advance(store, "a", event(1), now=at(10), custom_status={"step": 1}, wake_at=wake)

    header = store.get("a")
    assert header is not None
    assert header.status == Status.RUNNING
    assert header.custom_status == {"step": 1}
    assert header.wake_at == wake
    assert header.updated_at == at(10)
    assert header.created_at == T0
    assert header.input == {"in": 1}
    assert header.version == 2

    advance(store, "a", event(2), status=Status.COMPLETED, now=at(20), output=[1, "two"])

    header = store.get("a")
    assert header is not None
    assert header.status == Status.COMPLETED
    assert header.output == [1, "two"]
    assert header.wake_at is None  # a finished instance waits for nothing
    assert header.custom_status is None
    assert header.updated_at == at(20)
    assert header.version == 3


def test_commit_records_the_error_of_a_failed_instance(store: HistoryStore) -> None:
    create(store, "a")
    error = ErrorInfo(type="builtins.ValueError", message="bad ✗", traceback="Traceback ...")

    advance(store, "a", event(1), status=Status.FAILED, error=error)

    header = store.get("a")
    assert header is not None
    assert header.status == Status.FAILED
    assert header.error == error
    assert header.output is None


def test_commit_removes_consumed_messages_and_keeps_those_posted_meanwhile(
    store: HistoryStore,
) -> None:
    create(store, "a")
    store.post("a", message("m1"))
    store.post("a", message("m2"))
    store.post("a", message("m3"))
    snapshot = store.load("a")
    store.post("a", message("late"))  # arrives while the step runs

    decision = decision_for(snapshot.history, "a", events=[event(1)], consumed=["m1", "m3"])
    store.commit(decision, expected_version=snapshot.version)

    assert inbox_ids(store, "a") == ["m2", "late"]


def test_post_does_not_change_the_version(store: HistoryStore) -> None:
    create(store, "a")
    snapshot = store.load("a")

    store.post("a", message("m1"))

    assert store.load("a").version == snapshot.version
    store.commit(
        decision_for(snapshot.history, "a", events=[event(1)], consumed=["m1"]),
        expected_version=snapshot.version,
    )


def test_a_stale_commit_raises_conflict_and_writes_nothing(store: HistoryStore) -> None:
    create(store, "a")
    create(store, "target")
    store.post("a", message("m1"))
    stale = store.load("a")
    advance(store, "a", event(1), custom_status="winner", wake_at=at(100))
    before = {iid: store.load(iid) for iid in ("a", "target")}

    loser = decision_for(
        stale.history,
        "a",
        events=[event(1, "loser")],
        status=Status.COMPLETED,
        output="loser",
        consumed=["m1"],
        children=[ChildStart("a:child", started(parent=("a", 1)))],
        messages=[OutgoingMessage("target", message("from-loser"))],
    )
    with pytest.raises(ConflictError):
        store.commit(loser, expected_version=stale.version)

    assert {iid: store.load(iid) for iid in ("a", "target")} == before
    assert store.get("a:child") is None
    assert inbox_ids(store, "a") == ["m1"]


def test_on_ready_is_called_once_for_a_commit_that_lands_and_never_for_one_that_does_not(
    store: HistoryStore,
) -> None:
    create(store, "a")
    stale = store.load("a")
    calls: list[str] = []

    winner = decision_for(stale.history, "a", events=[event(1, "winner")])
    assert store.commit(winner, expected_version=1, on_ready=lambda: calls.append("winner")) == 2
    loser = decision_for(stale.history, "a", events=[event(1, "loser")])
    with pytest.raises(ConflictError):
        store.commit(loser, expected_version=1, on_ready=lambda: calls.append("loser"))
    gone = decision_for(stale.history, "nobody", events=[event(1)])
    with pytest.raises(InstanceNotFoundError):
        store.commit(gone, expected_version=1, on_ready=lambda: calls.append("nobody"))

    assert calls == ["winner"]
    assert [e.value for e in store.history("a")[1:]] == ["winner"]  # type: ignore[attr-defined]


def test_commit_with_a_version_from_the_future_conflicts(store: HistoryStore) -> None:
    create(store, "a")
    snapshot = store.load("a")

    with pytest.raises(ConflictError):
        store.commit(decision_for(snapshot.history, "a", events=[event(1)]), expected_version=7)

    assert store.load("a") == snapshot


def test_a_commit_that_cannot_be_stored_writes_nothing(store: HistoryStore) -> None:
    create(store, "a")
    store.post("a", message("m1"))
    before = store.load("a")
    unstorable = decision_for(
        before.history,
        "a",
        events=[event(1)],
        status=Status.COMPLETED,
        output=object(),  # not JSON
        consumed=["m1"],
        children=[ChildStart("a:kid", started(parent=("a", 1)))],
    )

    with pytest.raises((TypeError, ValueError)):
        store.commit(unstorable, expected_version=before.version)

    assert store.load("a") == before
    assert store.get("a:kid") is None
    assert advance(store, "a", event(1)) == before.version + 1


def test_commit_creates_children_atomically_with_the_parent_event(store: HistoryStore) -> None:
    create(store, "mom", when=T0)
    child_start = started("store_t_kid", {"x": 1}, when=at(1), parent=("mom", 1))

    advance(
        store,
        "mom",
        ChildScheduled(task_id=1, workflow="store_t_kid", input={"x": 1}, child_id="mom:1:1"),
        children=[ChildStart("mom:1:1", child_start)],
    )

    kid = store.get("mom:1:1")
    assert kid is not None
    assert kid.status == Status.PENDING
    assert kid.version == 1
    assert kid.parent_id == "mom"
    assert kid.workflow == "store_t_kid"
    assert store.history("mom:1:1") == [child_start]
    assert "mom:1:1" in store.ready(at(1))
    assert isinstance(store.history("mom")[-1], ChildScheduled)


def test_a_taken_child_id_fails_the_child_and_leaves_the_owner_untouched(
    store: HistoryStore,
) -> None:
    create(store, "mom")
    create(store, "taken", "store_t_stranger", {"mine": True})
    store.post("taken", message("theirs"))
    before = store.load("taken")

    advance(
        store,
        "mom",
        ChildScheduled(task_id=4, workflow="store_t_kid", child_id="taken"),
        children=[ChildStart("taken", started("store_t_kid", parent=("mom", 4)))],
    )

    assert store.load("taken") == before
    inbox = store.load("mom").inbox
    assert len(inbox) == 1
    result = inbox[0]
    assert isinstance(result, ChildResult)
    assert (result.task_id, result.run, result.child_id) == (4, 1, "taken")
    assert result.status == Status.FAILED
    assert result.error is not None
    assert "InstanceExistsError" in result.error.type
    assert "taken" in result.error.message
    assert "mom" in store.ready(at(0))


def test_outgoing_messages_reach_unfinished_instances_only(store: HistoryStore) -> None:
    create(store, "sender")
    create(store, "pending")
    create(store, "stuck")
    advance(store, "stuck", status=Status.STUCK)
    create(store, "done")
    finish(store, "done")
    done_before = store.load("done")

    advance(
        store,
        "sender",
        event(1),
        messages=[
            OutgoingMessage("pending", message("to-pending")),
            OutgoingMessage("stuck", message("to-stuck")),
            OutgoingMessage("done", message("to-done")),
            OutgoingMessage("ghost", message("to-ghost")),
        ],
    )

    assert inbox_ids(store, "pending") == ["to-pending"]
    assert inbox_ids(store, "stuck") == ["to-stuck"]
    assert store.load("done") == done_before
    assert store.get("ghost") is None
    assert store.load("sender").version == 2


def test_a_final_commit_can_notify_its_parent(store: HistoryStore) -> None:
    create(store, "mom")
    assert store.create("kid", started(parent=("mom", 1)))
    note = ChildResult(task_id=1, run=1, child_id="kid", status=Status.COMPLETED, result=42)

    advance(
        store,
        "kid",
        WorkflowCompleted(result=42),
        status=Status.COMPLETED,
        output=42,
        messages=[OutgoingMessage("mom", note)],
    )

    assert store.load("mom").inbox == [note]


def test_continue_as_new_starts_the_next_run(store: HistoryStore) -> None:
    create(store, "a", input={"round": 1})
    advance(store, "a", event(1), wake_at=at(50), custom_status="r1")
    store.post("a", message("old"))
    store.post("a", message("keep"))
    run1 = store.history("a")
    snapshot = store.load("a")
    next_run = WorkflowStarted(
        workflow="store_t_wf", input={"round": 2}, run=2, seq=1, timestamp=at(70)
    )
    decision = decision_for(
        snapshot.history,
        "a",
        events=[WorkflowContinuedAsNew(input={"round": 2}, timestamp=at(70))],
        consumed=["old"],
        next_run=next_run,
        now=at(70),
    )

    version = store.commit(decision, expected_version=snapshot.version)

    header = store.get("a")
    assert header is not None
    assert header.run == 2
    assert header.status == Status.RUNNING
    assert header.input == {"round": 2}
    assert header.version == version == 3
    assert header.wake_at is None
    assert header.created_at == T0
    loaded = store.load("a")
    assert loaded.history == [next_run]
    assert store.history("a") == [next_run]
    assert store.history("a", run=2) == [next_run]
    assert store.history("a", run=1) == [*run1, decision.events[0]]
    assert [m.id for m in loaded.inbox] == ["keep"]
    assert "a" in store.ready(at(70))

    advance(store, "a", event(1))

    assert [e.seq for e in store.history("a")] == [1, 2]
    assert store.history("a", run=1) == [*run1, decision.events[0]]


def test_history_of_a_run_that_never_existed_is_empty(store: HistoryStore) -> None:
    create(store, "a")

    assert store.history("a", run=5) == []


@pytest.mark.parametrize("status", TERMINAL)
def test_a_finished_instance_has_an_empty_inbox(store: HistoryStore, status: Status) -> None:
    create(store, "a")
    store.post("a", message("m1"))
    store.post("a", message("m2"))
    snapshot = store.load("a")
    store.post("a", message("late"))

    store.commit(
        decision_for(snapshot.history, "a", events=[event(1)], status=status, consumed=["m1"]),
        expected_version=snapshot.version,
    )

    assert store.load("a").inbox == []
    assert "a" not in store.ready(at(10_000))


def test_a_stuck_instance_keeps_its_inbox(store: HistoryStore) -> None:
    create(store, "a")
    store.post("a", message("m1"))
    error = ErrorInfo(type="durable.errors.NonDeterminismError", message="at 3: recorded x")

    advance(store, "a", status=Status.STUCK, error=error)

    header = store.get("a")
    assert header is not None
    assert header.status == Status.STUCK
    assert header.error == error
    assert inbox_ids(store, "a") == ["m1"]
    assert store.post("a", message("m2")) is True
    assert inbox_ids(store, "a") == ["m1", "m2"]


def test_a_stuck_instance_resumes(store: HistoryStore) -> None:
    create(store, "a")
    advance(store, "a", status=Status.STUCK)
    store.post("a", message("m1"))

    advance(store, "a", event(1), consumed=["m1"])

    header = store.get("a")
    assert header is not None
    assert header.status == Status.RUNNING
    assert header.error is None
    assert store.load("a").inbox == []


def test_a_child_taken_by_a_finishing_parent_posts_nothing(store: HistoryStore) -> None:
    create(store, "mom")
    create(store, "taken")

    advance(
        store,
        "mom",
        ChildScheduled(task_id=1, workflow="store_t_kid", child_id="taken"),
        status=Status.COMPLETED,
        children=[ChildStart("taken", started("store_t_kid", parent=("mom", 1)))],
    )

    assert store.load("mom").inbox == []


# ----------------------------------------------------------------------------- post


def test_post_ignores_a_message_id_already_in_the_inbox(store: HistoryStore) -> None:
    create(store, "a")
    assert store.post("a", message("m1", data="first")) is True
    assert store.post("a", message("m2")) is True

    assert store.post("a", message("m1", data="second")) is True

    inbox = store.load("a").inbox
    assert [m.id for m in inbox] == ["m1", "m2"]
    assert inbox[0] == message("m1", data="first")


def test_the_same_message_id_may_go_to_two_instances(store: HistoryStore) -> None:
    create(store, "a")
    create(store, "b")
    broadcast = message("same-id", data="hello")

    assert store.post("a", broadcast) is True
    assert store.post("b", broadcast) is True

    assert store.load("a").inbox == [broadcast]
    assert store.load("b").inbox == [broadcast]
    advance(store, "a", event(1), consumed=["same-id"])
    assert store.load("b").inbox == [broadcast]


@pytest.mark.parametrize("status", TERMINAL)
def test_post_to_a_finished_instance_returns_false_and_writes_nothing(
    store: HistoryStore, status: Status
) -> None:
    create(store, "a")
    finish(store, "a", status)
    before = store.load("a")

    assert store.post("a", message("m1")) is False

    assert store.load("a") == before


def test_post_accepts_every_kind_of_message(store: HistoryStore) -> None:
    create(store, "a")
    messages: list[Message] = [
        ActivityResult(task_id=1, run=1, attempt=2, result={"ok": True}),
        ActivityResult(task_id=2, run=1, attempt=1, error=ErrorInfo(type="E", message="m")),
        EventMessage(event="approval", data=["yes"]),
        ChildResult(task_id=3, run=1, child_id="kid", status=Status.CANCELED),
        CancelMessage(reason="user asked"),
        TerminateMessage(reason="ops"),
    ]
    for m in messages:
        assert store.post("a", m) is True

    assert store.load("a").inbox == messages


# ----------------------------------------------------------------------------- get, list


def test_returned_values_are_copies(store: HistoryStore) -> None:
    payload = {"items": [1, 2]}
    create(store, "a", input=payload)
    payload["items"].append(3)  # the caller keeps using its object

    header = store.get("a")
    assert header is not None and header.input == {"items": [1, 2]}
    header.input["items"].append(99)
    header.status = Status.FAILED
    first = store.load("a").history[0]
    assert isinstance(first, WorkflowStarted)
    first.input["items"].append(100)

    again = store.get("a")
    assert again is not None
    assert again.input == {"items": [1, 2]}
    assert again.status == Status.PENDING
    assert store.history("a")[0] == started(input={"items": [1, 2]})


def test_list_instances_filters_and_orders_newest_first(store: HistoryStore) -> None:
    create(store, "p1", "store_t_one", when=at(1))
    create(store, "r1", "store_t_one", when=at(2))
    create(store, "c1", "store_t_two", when=at(3))
    create(store, "s1", "store_t_two", when=at(4))
    create(store, "r2", "store_t_two", when=at(5))
    create(store, "f1", "store_t_one", when=at(6))
    for iid in ("r1", "r2"):
        advance(store, iid, event(1))
    finish(store, "c1", Status.COMPLETED)
    finish(store, "f1", Status.FAILED)
    advance(store, "s1", status=Status.STUCK)

    def ids(**kwargs: Any) -> list[str]:
        headers = store.list_instances(**kwargs)
        assert all(isinstance(h, InstanceStatus) for h in headers)
        return [h.instance_id for h in headers]

    assert ids() == ["f1", "r2", "s1", "c1", "r1", "p1"]
    assert ids(status=Status.RUNNING) == ["r2", "r1"]
    assert ids(status="STUCK") == ["s1"]  # a plain string works too
    assert ids(status=[Status.PENDING, Status.RUNNING, Status.STUCK]) == ["r2", "s1", "r1", "p1"]
    assert ids(status=[Status.CANCELED]) == []
    assert ids(workflow="store_t_one") == ["f1", "r1", "p1"]
    assert ids(workflow="store_t_none") == []
    assert ids(status=Status.RUNNING, workflow="store_t_two") == ["r2"]
    assert ids(limit=2) == ["f1", "r2"]
    assert ids(status=list(UNFINISHED), limit=1) == ["r2"]
    listed = store.list_instances(status=Status.COMPLETED)
    assert listed == [store.get("c1")]


# ----------------------------------------------------------------------------- ready


def test_ready_lists_instances_with_work(store: HistoryStore) -> None:
    now = at(1000)
    create(store, "pending")
    create(store, "with-inbox")
    advance(store, "with-inbox", event(1))
    store.post("with-inbox", message("m"))
    create(store, "timer-due")
    advance(store, "timer-due", event(1), wake_at=at(999))
    create(store, "timer-now")
    advance(store, "timer-now", event(1), wake_at=now)
    create(store, "timer-later")
    advance(store, "timer-later", event(1), wake_at=at(1001))
    create(store, "idle")
    advance(store, "idle", event(1))
    create(store, "stuck")
    advance(store, "stuck", status=Status.STUCK, wake_at=at(1))
    store.post("stuck", message("m"))
    for status in TERMINAL:
        create(store, f"ended-{status}")
        finish(store, f"ended-{status}", status)

    assert set(store.ready(now)) == {"pending", "with-inbox", "timer-due", "timer-now"}
    assert len(store.ready(now, limit=2)) == 2
    assert set(store.ready(now, limit=2)) <= {"pending", "with-inbox", "timer-due", "timer-now"}
    assert set(store.ready(at(0))) == {"pending", "with-inbox"}
    assert len(store.ready(now)) == len(set(store.ready(now)))


def test_an_instance_with_a_timer_and_messages_is_listed_once(store: HistoryStore) -> None:
    create(store, "a")
    advance(store, "a", event(1), wake_at=at(1))
    store.post("a", message("m1"))
    store.post("a", message("m2"))

    assert store.ready(at(5)) == ["a"]


# ----------------------------------------------------------------------------- delete


def test_delete_removes_every_run_and_the_inbox(store: HistoryStore) -> None:
    create(store, "a")
    create(store, "other")
    store.post("other", message("m"))
    snapshot = store.load("a")
    next_run = WorkflowStarted(workflow="store_t_wf", run=2, seq=1, timestamp=at(1))
    store.commit(
        decision_for(snapshot.history, "a", events=[WorkflowContinuedAsNew()], next_run=next_run),
        expected_version=snapshot.version,
    )
    store.post("a", message("m"))

    assert store.delete("a") is True

    assert store.get("a") is None
    assert store.delete("a") is False
    with pytest.raises(InstanceNotFoundError):
        store.load("a")
    assert [h.instance_id for h in store.list_instances()] == ["other"]
    assert "a" not in store.ready(at(1))
    assert inbox_ids(store, "other") == ["m"]

    fresh = create(store, "a", "store_t_again")
    snapshot = store.load("a")
    assert snapshot.header.version == 1 and snapshot.header.run == 1
    assert snapshot.history == [fresh]
    assert snapshot.inbox == []
    assert store.history("a", run=2) == []


def test_delete_leaves_children_alone(store: HistoryStore) -> None:
    create(store, "mom")
    kid = started("store_t_kid", parent=("mom", 1))
    advance(
        store,
        "mom",
        ChildScheduled(task_id=1, workflow="store_t_kid", child_id="kid"),
        children=[ChildStart("kid", kid)],
    )

    assert store.delete("mom") is True

    assert store.history("kid") == [kid]
    assert store.post("kid", message("m")) is True


# ----------------------------------------------------------------------------- payloads


def test_a_5_mb_payload_round_trips(store: HistoryStore) -> None:
    big = {
        "blob": "ü" * (2 * 1024 * 1024),
        "rows": [{"i": i, "s": "x" * 40} for i in range(40_000)],
    }
    first = create(store, "big", input=big)
    store.post("big", message("m", data=big))
    advance(
        store,
        "big",
        ActivityCompleted(task_id=1, result=big),
        status=Status.COMPLETED,
        output=big,
        consumed=["m"],
    )

    snapshot = store.load("big")
    assert snapshot.history[0] == first
    completed = snapshot.history[1]
    assert isinstance(completed, ActivityCompleted) and completed.result == big
    assert snapshot.header.input == big
    assert snapshot.header.output == big


def test_a_5_mb_message_round_trips(store: HistoryStore) -> None:
    big = "€" * (5 * 1024 * 1024 // 3 + 1)
    create(store, "a")

    store.post("a", message("m", data=big))

    inbox = store.load("a").inbox
    assert isinstance(inbox[0], EventMessage) and inbox[0].data == big


ODD_IDS = [
    "ünïcødé-🦆",
    "雪/☃ \u200d👩‍👩‍👧",
    "שלום",
    "e\u0301",
    "'; DROP TABLE instances; --",
    'quote" and \\ back',
    "100%_like*",
    "meta",
    "h#000000000001",
    "i#01H",
    "\U0001d518\U0001d52b\U0001d526",  # astral-plane letters
    " spaced ",
]

ODD_PAYLOAD: Any = {
    "ключ": "значение",
    "emoji 🎉": ["😀", "\u2028\u2029", "nul\u0000inside", "tab\tnewline\n"],
    "nested": {"": None, "bool": True, "float": 0.1, "neg": -0.0, "big": 2**53 + 1},
    "rtl": "مرحبا",
}


@pytest.mark.parametrize("instance_id", ODD_IDS)
def test_odd_ids_work_everywhere(store: HistoryStore, instance_id: str) -> None:
    first = create(store, instance_id, input=instance_id)
    store.post(instance_id, message(f"msg-{instance_id}"))

    advance(store, instance_id, event(1), consumed=[f"msg-{instance_id}"])

    assert store.history(instance_id)[0] == first
    assert store.load(instance_id).inbox == []
    assert [h.instance_id for h in store.list_instances()] == [instance_id]
    header = store.get(instance_id)
    assert header is not None and header.input == instance_id
    assert store.delete(instance_id) is True
    assert store.get(instance_id) is None


def test_odd_unicode_payloads_round_trip(store: HistoryStore) -> None:
    first = create(store, "a", "store_t_wf ✓", input=ODD_PAYLOAD)
    store.post("a", message("ключ-🔑", data=ODD_PAYLOAD))
    advance(
        store,
        "a",
        event(1, value=ODD_PAYLOAD),
        custom_status=ODD_PAYLOAD,
    )

    snapshot = store.load("a")
    assert snapshot.history[0] == first
    assert snapshot.history[1] == event(1, value=ODD_PAYLOAD).model_copy(update={"seq": 2})
    assert snapshot.inbox == [message("ключ-🔑", data=ODD_PAYLOAD)]
    assert snapshot.header.input == ODD_PAYLOAD
    assert snapshot.header.custom_status == ODD_PAYLOAD
    assert [h.instance_id for h in store.list_instances(workflow="store_t_wf ✓")] == ["a"]


# ----------------------------------------------------------------------------- concurrency


def race(writers: Sequence[HistoryStore], instance_id: str, rounds: int) -> list[int]:
    """Two threads load the same version, then both commit, ``rounds`` times over.

    Returns how many commits each writer won; raises whatever a writer raised
    other than ``ConflictError``.
    """
    barrier = threading.Barrier(len(writers), timeout=60)  # a broken writer must not hang the run
    wins = [0] * len(writers)
    conflicts = [0] * len(writers)
    errors: list[BaseException] = []

    def writer(me: int) -> None:
        store = writers[me]
        try:
            for _ in range(rounds):
                snapshot = store.load(instance_id)
                decision = decision_for(
                    snapshot.history, instance_id, events=[event(me, value=f"writer {me}")]
                )
                barrier.wait()  # everyone loaded the same version before anyone commits
                try:
                    store.commit(decision, expected_version=snapshot.version)
                    wins[me] += 1
                except ConflictError:
                    conflicts[me] += 1
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert sum(wins) == rounds  # exactly one winner per version
    assert sum(conflicts) == rounds * (len(writers) - 1)
    return wins


def test_racing_commits_from_threads_let_exactly_one_win_per_version(
    store: HistoryStore,
) -> None:
    create(store, "a")
    rounds = 15

    race([store, store], "a", rounds)

    history = store.history("a")
    assert [e.seq for e in history] == list(range(1, rounds + 2))
    assert store.load("a").version == rounds + 1


# ----------------------------------------------------------------------------- with the engine


@activity(name="store_t_echo")
def _echo(value: Any) -> Any:
    return value


@workflow(name="store_t_calls")
def _calls(ctx: Context, value: Any) -> Any:
    got = yield ctx.call(_echo, value)
    return {"echoed": got}


@workflow(name="store_t_kid")
def _kid(ctx: Context, value: Any) -> Any:
    yield ctx.sleep(timedelta(seconds=5))
    return value * 2


@workflow(name="store_t_mom")
def _mom(ctx: Context, value: Any) -> Any:
    doubled = yield ctx.child(_kid, value)
    return doubled + 1


def _step(store: HistoryStore, instance_id: str, wf: Any, now: datetime) -> Decision:
    snapshot = store.load(instance_id)
    decision = replay(wf, snapshot.history, snapshot.inbox, now, instance_id=instance_id)
    store.commit(decision, expected_version=snapshot.version)
    return decision


def test_an_engine_driven_activity_round_trip(store: HistoryStore) -> None:
    assert store.create("a", WorkflowStarted(workflow="store_t_calls", input="hi", timestamp=T0))

    first = _step(store, "a", _calls, at(1))
    assert len(first.dispatch) == 1
    work = first.dispatch[0]
    assert store.ready(at(1)) == []
    store.post(
        "a",
        ActivityResult(task_id=work.task_id, run=work.run, attempt=work.attempt, result="hi"),
    )
    assert store.ready(at(1)) == ["a"]
    second = _step(store, "a", _calls, at(2))

    assert second.status == Status.COMPLETED
    header = store.get("a")
    assert header is not None
    assert header.status == Status.COMPLETED
    assert header.output == {"echoed": "hi"}
    assert header.version == 3
    assert store.load("a").inbox == []
    kinds = [e.kind for e in store.history("a")]
    assert kinds == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]


def test_an_engine_driven_child_round_trip(store: HistoryStore) -> None:
    assert store.create("mom", WorkflowStarted(workflow="store_t_mom", input=20, timestamp=T0))

    first = _step(store, "mom", _mom, at(1))
    assert len(first.children) == 1
    kid_id = first.children[0].instance_id
    kid = store.get(kid_id)
    assert kid is not None and kid.parent_id == "mom" and kid.status == Status.PENDING

    _step(store, kid_id, _kid, at(2))  # starts the kid's timer
    kid = store.get(kid_id)
    assert kid is not None and kid.wake_at is not None
    assert kid_id not in store.ready(at(3))
    assert kid_id in store.ready(kid.wake_at)
    _step(store, kid_id, _kid, kid.wake_at)  # the timer fires, the kid ends, mom hears of it
    kinds = [e.kind for e in store.history(kid_id)]
    assert "TimerFired" in kinds and kinds[-1] == "WorkflowCompleted"

    assert store.ready(at(10)) == ["mom"]
    last = _step(store, "mom", _mom, at(10))
    assert last.status == Status.COMPLETED
    header = store.get("mom")
    assert header is not None and header.output == 41
    assert any(isinstance(e, ChildCompleted) for e in store.history("mom"))


# ----------------------------------------------------------------------------- SQLite only


def test_sqlite_a_second_store_on_the_same_file_sees_commits(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    try:
        create(one, "a")
        assert two.get("a") is not None
        advance(two, "a", event(1), custom_status="from two")
        two.post("a", message("m"))

        snapshot = one.load("a")
        assert snapshot.version == 2
        assert snapshot.header.custom_status == "from two"
        assert [m.id for m in snapshot.inbox] == ["m"]

        stale = one.load("a")
        advance(two, "a", event(2))
        with pytest.raises(ConflictError):
            one.commit(decision_for(stale.history, "a", events=[event(3)]), expected_version=2)
    finally:
        one.close()
        two.close()


def test_sqlite_calls_on_ready_before_the_commit_is_visible_and_a_failure_after_it_writes_nothing(
    tmp_path: Path,
) -> None:
    """``on_ready`` runs holding the write lock, before COMMIT: another connection does not
    see the step yet, and if COMMIT then fails (a full disk) nothing of it is written."""
    path = tmp_path / "early.db"
    writer, reader = SQLiteStore(path), SQLiteStore(path)
    try:
        create(writer, "a")
        seen: list[int] = []

        def ready() -> None:
            header = reader.get("a")
            assert header is not None
            seen.append(header.version)

        advance_decision = decision_for(writer.load("a").history, "a", events=[event(1)])
        assert writer.commit(advance_decision, expected_version=1, on_ready=ready) == 2
        assert seen == [1]
        assert reader.get("a").version == 2  # type: ignore[union-attr]

        def full_disk() -> None:
            raise sqlite3.OperationalError("database or disk is full")

        snapshot = writer.load("a")
        failing = decision_for(
            snapshot.history, "a", events=[event(2)], status=Status.COMPLETED, output=1
        )
        with pytest.raises(sqlite3.OperationalError):
            writer.commit(failing, expected_version=2, on_ready=full_disk)
        assert reader.load("a") == snapshot
    finally:
        writer.close()
        reader.close()


def test_sqlite_data_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    store = SQLiteStore(path)
    create(store, "a", input=ODD_PAYLOAD)
    advance(store, "a", event(1), wake_at=at(30), custom_status="cs")
    snapshot = store.load("a")
    next_run = WorkflowStarted(workflow="store_t_wf", run=2, seq=1, timestamp=at(40))
    store.commit(
        decision_for(snapshot.history, "a", events=[WorkflowContinuedAsNew()], next_run=next_run),
        expected_version=snapshot.version,
    )
    store.post("a", message("m"))
    before = (store.load("a"), store.history("a", run=1), store.list_instances())
    store.close()

    reopened = SQLiteStore(path)
    try:
        assert (reopened.load("a"), reopened.history("a", run=1), reopened.list_instances()) == (
            before
        )
        assert reopened.ready(at(40)) == ["a"]
    finally:
        reopened.close()


def test_sqlite_racing_writers_on_separate_connections(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    stores = [SQLiteStore(path), SQLiteStore(path)]
    try:
        create(stores[0], "a")

        race(stores, "a", rounds=10)

        assert [e.seq for e in stores[1].history("a")] == list(range(1, 12))
        assert stores[0].load("a").version == 11
    finally:
        for s in stores:
            s.close()


def _process_writer(path: str, name: str, commits: int) -> None:
    """Commit ``commits`` events to instance "a", reloading after every conflict."""
    store = SQLiteStore(path)
    try:
        done = 0
        while done < commits:
            snapshot = store.load("a")
            decision = decision_for(
                snapshot.history, "a", events=[event(done, f"{name}-{done}")], now=at(done)
            )
            try:
                store.commit(decision, expected_version=snapshot.version)
            except ConflictError:
                continue
            done += 1
    finally:
        store.close()


@pytest.mark.slow
def test_sqlite_racing_processes_lose_no_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "procs.db")
    store = SQLiteStore(path)
    create(store, "a")
    commits = 40
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_process_writer, args=(path, name, commits)) for name in "pq"
    ]
    try:
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=120)
        assert [p.exitcode for p in processes] == [0, 0]

        history = store.history("a")
        assert [e.seq for e in history] == list(range(1, 2 * commits + 2))
        values = [str(getattr(e, "value", "")) for e in history[1:]]
        for name in "pq":
            assert [v for v in values if v.startswith(name)] == [
                f"{name}-{i}" for i in range(commits)
            ]
        assert store.load("a").version == 2 * commits + 1
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
        store.close()


def test_sqlite_refuses_a_file_from_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()

    with pytest.raises(ConfigurationError, match="newer version of durable"):
        SQLiteStore(path)


def test_sqlite_upgrades_a_file_of_schema_0(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    create(store, "a")
    create(store, "b")
    store.post("a", message("m1"))
    store.post("a", message("m2"))
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE saved AS SELECT * FROM inbox;
        DROP TABLE inbox;
        CREATE TABLE inbox (
            position    INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id TEXT NOT NULL,
            message_id  TEXT NOT NULL UNIQUE,
            message     TEXT NOT NULL
        );
        CREATE INDEX inbox_by_instance ON inbox (instance_id, position);
        INSERT INTO inbox SELECT * FROM saved;
        DROP TABLE saved;
        PRAGMA user_version=0;
        """
    )
    db.close()

    upgraded = SQLiteStore(path)
    try:
        assert inbox_ids(upgraded, "a") == ["m1", "m2"]
        assert upgraded.post("b", message("m1")) is True
        assert upgraded.post("a", message("m3")) is True
        assert inbox_ids(upgraded, "a") == ["m1", "m2", "m3"]
        assert inbox_ids(upgraded, "b") == ["m1"]
    finally:
        upgraded.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        db.close()


def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "wal.db")
    store.close()

    db = sqlite3.connect(tmp_path / "wal.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


# ----------------------------------------------------------------------------- open_store


def test_open_store_sqlite_url_with_options(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "opened.db"

    store = open_store(f"sqlite:///{path}?synchronous=NORMAL")
    try:
        assert isinstance(store, SQLiteStore)
        assert Path(store.path) == path
        assert store.synchronous == "NORMAL"
        create(store, "a")
    finally:
        store.close()
    again = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(again, SQLiteStore)
        assert again.synchronous == "FULL"
        assert again.get("a") is not None
    finally:
        again.close()


def test_open_store_relative_sqlite_url_and_plain_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for spec in ("sqlite:///rel/one.db", "rel/two.db", Path("rel/three.db")):
        store = open_store(spec)
        try:
            assert isinstance(store, SQLiteStore)
            create(store, "a")
        finally:
            store.close()
    assert sorted(p.name for p in (tmp_path / "rel").glob("*.db")) == [
        "one.db",
        "three.db",
        "two.db",
    ]


def test_open_store_memory_and_objects() -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    mine = MemoryStore()
    assert open_store(mine) is mine
    in_memory = open_store("sqlite:///:memory:")
    try:
        assert isinstance(in_memory, SQLiteStore)
        create(in_memory, "a")
        assert in_memory.get("a") is not None
    finally:
        in_memory.close()


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("sqlite://", ["names no file"]),
        ("sqlite:///", ["names no file"]),
        ("sqlite:///?synchronous=FULL", ["names no file"]),
        ("sqlite:///x.db?synchronous=SOMETIMES", ["synchronous", "SOMETIMES"]),
        ("sqlite:///x.db?synchronous=", ["synchronous"]),
        ("sqlite:///x.db?journal=off", ["journal"]),
        ("postgres://db/x", ["postgres://db/x", "sqlite:///"]),
        ("memory://elsewhere", ["memory://elsewhere"]),
    ],
)
def test_open_store_rejects_bad_urls(
    spec: str, words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigurationError) as raised:
        open_store(spec)

    for word in words:
        assert word in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_open_store_rejects_other_objects() -> None:
    with pytest.raises(ConfigurationError, match="42"):
        open_store(42)  # type: ignore[arg-type]
