"""The one step every driver (local threads, AWS Lambda) runs: load, replay, commit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from durable.codec import ErrorInfo
from durable.errors import ConflictError, DurableError
from durable.history import Message, Status
from durable.replay import Decision, LiveRun, replay_live, resume
from durable.store.base import HistoryStore, Snapshot
from durable.workflow import Workflow

WorkflowResolver = Callable[[str], Workflow[Any, Any]]
"""Finds the code of a workflow by its registered name (raises UnknownWorkflowError)."""

MAX_CONFLICT_RETRIES = 20
DEFAULT_LIVE_RUNS = 1000


@dataclass
class _Kept:
    live: LiveRun
    version: int
    """The header version the live run's last decision was committed at."""


class LiveRuns:
    """Workflow runs kept live between steps (a sticky cache), so a step costs O(new events).

    Keyed by instance and valid for one header version: a step that finds the
    instance at that version loads only the inbox and resumes the generator;
    any other version (another worker committed) or a miss replays in full.
    Bounded: the least recently stepped runs are closed beyond ``capacity``.
    Thread-safe; a run is taken out while it is stepped, so two threads never share one.
    """

    def __init__(self, capacity: int = DEFAULT_LIVE_RUNS) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {capacity}")
        self.capacity = capacity
        self._runs: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._runs)

    def take(self, instance_id: str) -> _Kept | None:
        with self._lock:
            return self._runs.pop(instance_id, None)

    def keep(self, instance_id: str, kept: _Kept) -> None:
        evicted: list[_Kept] = []
        with self._lock:
            old = self._runs.pop(instance_id, None)
            if old is not None:
                evicted.append(old)
            if self.capacity > 0:
                self._runs[instance_id] = kept
            else:
                evicted.append(kept)
            while len(self._runs) > self.capacity:
                evicted.append(self._runs.popitem(last=False)[1])
        for item in evicted:  # outside the lock: closing runs the workflow's finally blocks
            item.live.close()

    def discard(self, instance_id: str) -> None:
        kept = self.take(instance_id)
        if kept is not None:
            kept.live.close()

    def clear(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for kept in runs:
            kept.live.close()


def step(
    store: HistoryStore,
    instance_id: str,
    resolve: WorkflowResolver,
    now: datetime,
    *,
    on_load: Callable[[Snapshot], None] | None = None,
    live_runs: LiveRuns | None = None,
    carried: list[Message] | None = None,
    on_ready: Callable[[Decision], None] | None = None,
) -> Decision | None:
    """Advance one instance as far as it can go now; return what was decided.

    Reloads and replays again when another writer committed first. Returns
    ``None`` when the instance has ended and nothing is waiting for it. A
    workflow name the resolver does not know leaves the instance STUCK with
    that error, so that a worker that has the code can resume it.
    ``on_load`` sees every snapshot loaded; the last one is what the decision
    was made from. With ``live_runs``, the generator is kept between steps
    (see :class:`LiveRuns`). ``carried`` are messages that were never posted
    (results of activities this driver ran itself): the step takes them as
    if they were in the inbox, so they are recorded by this step's one commit,
    and removes from the list those it took (or dropped as stale). Those left
    (a step cut short, an instance STUCK) are the driver's to keep or post.
    ``on_ready(decision)`` is called once the decision's commit can no longer
    lose to another writer, perhaps before it is durable (see
    :meth:`HistoryStore.commit`); a step that commits nothing does not call it.
    """
    carried_ids = {m.id for m in carried or ()}
    for _ in range(MAX_CONFLICT_RETRIES):
        snapshot, kept = _load(store, instance_id, resolve, live_runs)
        if on_load is not None:
            on_load(snapshot)
        if snapshot.header.status.is_terminal and not snapshot.inbox:
            if kept is not None:
                kept.live.close()
            return None
        inbox = [*snapshot.inbox, *carried] if carried else snapshot.inbox
        live: LiveRun | None = None
        if kept is not None:
            decision, live = resume(kept.live, inbox, now)
        else:
            try:
                workflow = resolve(snapshot.header.workflow)
            except DurableError as exc:
                decision = _stuck_without_code(snapshot, exc, now)
            else:
                decision, live = replay_live(
                    workflow, snapshot.history, inbox, now, instance_id=instance_id
                )
        taken: set[str] = set()
        if carried_ids:
            taken = carried_ids.intersection(decision.consumed)
            decision.consumed = [i for i in decision.consumed if i not in carried_ids]
        if not _changes_anything(snapshot, decision):
            _keep(live_runs, instance_id, live, snapshot.version)
            _take(carried, taken)
            return decision
        try:
            version = store.commit(
                decision,
                expected_version=snapshot.version,
                on_ready=None if on_ready is None else partial(on_ready, decision),
            )
        except ConflictError:
            _close(live)  # it stands for a commit that did not happen
            continue
        except BaseException:
            _close(live)
            raise
        _keep(live_runs, instance_id, live, version)
        _take(carried, taken)
        return decision
    raise ConflictError(instance_id, -1, None)


def _take(carried: list[Message] | None, taken: set[str]) -> None:
    if carried and taken:
        carried[:] = [m for m in carried if m.id not in taken]


def _load(
    store: HistoryStore, instance_id: str, resolve: WorkflowResolver, live_runs: LiveRuns | None
) -> tuple[Snapshot, _Kept | None]:
    """The snapshot to step from, and the live run to resume if it is still current.

    With a live run at the loaded version, only what came after its history is
    read (nothing, since a version moves with every commit: the inbox).
    """
    kept = live_runs.take(instance_id) if live_runs is not None else None
    if kept is None:
        if live_runs is not None:
            live_runs.misses += 1
        return store.load(instance_id), None
    snapshot = store.load(instance_id, after=kept.live.last_seq)
    header = snapshot.header
    current = header.version == kept.version and header.run == kept.live.run
    if current:
        try:
            current = resolve(header.workflow) is kept.live.workflow
        except DurableError:
            current = False
    if current and live_runs is not None:
        live_runs.hits += 1
        return snapshot, kept
    kept.live.close()
    if live_runs is not None:
        live_runs.misses += 1
    return store.load(instance_id), None


def _keep(live_runs: LiveRuns | None, instance_id: str, live: LiveRun | None, version: int) -> None:
    if live is not None and live_runs is not None:
        live_runs.keep(instance_id, _Kept(live, version))
    else:
        _close(live)


def _close(live: LiveRun | None) -> None:
    if live is not None:
        live.close()


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
