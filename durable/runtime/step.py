"""The one step every driver (local threads, AWS Lambda) runs: load, replay, commit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from durable.codec import ErrorInfo
from durable.errors import ConflictError, DurableError
from durable.history import Status
from durable.replay import Decision, replay
from durable.store.base import HistoryStore, Snapshot
from durable.workflow import Workflow

WorkflowResolver = Callable[[str], Workflow[Any, Any]]
"""Finds the code of a workflow by its registered name (raises UnknownWorkflowError)."""

MAX_CONFLICT_RETRIES = 20


def step(
    store: HistoryStore,
    instance_id: str,
    resolve: WorkflowResolver,
    now: datetime,
    *,
    on_load: Callable[[Snapshot], None] | None = None,
) -> Decision | None:
    """Advance one instance as far as it can go now; return what was decided.

    Reloads and replays again when another writer committed first. Returns
    ``None`` when the instance has ended and nothing is waiting for it. A
    workflow name the resolver does not know leaves the instance STUCK with
    that error, so that a worker that has the code can resume it.
    ``on_load`` sees every snapshot loaded; the last one is what the decision
    was made from.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        snapshot = store.load(instance_id)
        if on_load is not None:
            on_load(snapshot)
        if snapshot.header.status.is_terminal and not snapshot.inbox:
            return None
        try:
            workflow = resolve(snapshot.header.workflow)
        except DurableError as exc:
            decision = _stuck_without_code(snapshot, exc, now)
        else:
            decision = replay(
                workflow, snapshot.history, snapshot.inbox, now, instance_id=instance_id
            )
        if not _changes_anything(snapshot, decision):
            return decision
        try:
            store.commit(decision, expected_version=snapshot.version)
        except ConflictError:
            continue
        return decision
    raise ConflictError(instance_id, -1, None)


def _stuck_without_code(snapshot: Snapshot, error: DurableError, now: datetime) -> Decision:
    return Decision(
        instance_id=snapshot.header.instance_id,
        run=snapshot.header.run,
        status=Status.STUCK,
        at=now,
        error=ErrorInfo.from_exception(error),
        custom_status=snapshot.header.custom_status,
    )


def _changes_anything(snapshot: Snapshot, decision: Decision) -> bool:
    header = snapshot.header
    return bool(
        decision.events
        or decision.consumed
        or decision.children
        or decision.messages
        or decision.next_run
        or decision.status != header.status
        or decision.wake_at != header.wake_at
        or decision.custom_status != header.custom_status
        or (decision.status == Status.STUCK and decision.error != header.error)
    )
