"""An in-memory store: for tests and ``durable.run``; everything is lost with the process.

It keeps what it stores as JSON text, as the durable stores do, so that it
behaves like them: a payload that cannot be stored fails here too, what is
read back is the caller's own copy, and later changes to the objects given
to it do not leak into its history.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from durable.errors import ConflictError, InstanceNotFoundError
from durable.history import (
    Event,
    InstanceStatus,
    Message,
    Status,
    WorkflowStarted,
    event_from_json,
    event_to_json,
    message_from_json,
    message_to_json,
)
from durable.replay import Decision
from durable.store.base import Snapshot, child_taken_message, header_for, statuses, updated_header


@dataclass
class _Instance:
    header: InstanceStatus
    """Parsed from ``header_json``, so it shares nothing with the caller's objects."""
    header_json: str
    runs: dict[int, list[tuple[int, str]]]
    """Run number -> ``(seq, event JSON)`` in ``seq`` order."""
    inbox: dict[str, str] = field(default_factory=dict)
    """Message id -> message JSON, in arrival order."""

    def set_header(self, header_json: str) -> None:
        self.header_json = header_json
        self.header = InstanceStatus.model_validate_json(header_json)

    def append(self, run: int, rows: Sequence[tuple[int, str]]) -> None:
        stored = self.runs.setdefault(run, [])
        stored.extend(rows)
        stored.sort(key=lambda row: row[0])

    def history(self, run: int) -> list[Event]:
        return [event_from_json(text) for _, text in self.runs.get(run, [])]

    def post(self, message_id: str, text: str) -> None:
        self.inbox.setdefault(message_id, text)


def _new_instance(instance_id: str, started: WorkflowStarted) -> _Instance:
    header = header_for(instance_id, started)
    inst = _Instance(header, "", {})
    inst.set_header(header.model_dump_json())
    inst.append(started.run, _rows([started]))
    return inst


def _rows(events: Sequence[Event]) -> list[tuple[int, str]]:
    return [(e.seq, event_to_json(e)) for e in events]


class MemoryStore:
    """A :class:`~durable.store.base.HistoryStore` kept in a dict, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        inst = _new_instance(instance_id, started)  # serialize outside the lock
        with self._lock:
            if instance_id in self._instances:
                return False
            self._instances[instance_id] = inst
            return True

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        with self._lock:
            inst = self._get(instance_id)
            rows = inst.runs[inst.header.run]
            if after is not None:
                rows = rows[bisect.bisect_right(rows, after, key=lambda row: row[0]) :]
            header_json = inst.header_json
            inbox = list(inst.inbox.values())
        return Snapshot(
            InstanceStatus.model_validate_json(header_json),
            [event_from_json(text) for _, text in rows],
            [message_from_json(text) for text in inbox],
        )

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        iid = decision.instance_id
        # Serialize everything first: a payload that cannot be stored must leave no trace.
        events = _rows(decision.events)
        next_run = _rows([decision.next_run]) if decision.next_run is not None else []
        children = [(c, _new_instance(c.instance_id, c.started)) for c in decision.children]
        outgoing = [
            (m.instance_id, m.message.id, message_to_json(m.message)) for m in decision.messages
        ]
        with self._lock:
            inst = self._instances.get(iid)
            if inst is None:
                raise InstanceNotFoundError(iid)
            if inst.header.version != expected_version:
                raise ConflictError(iid, expected_version, inst.header.version)
            header = updated_header(inst.header, decision)
            header_json = header.model_dump_json()
            inst.append(inst.header.run, events)
            if decision.next_run is not None:
                inst.append(decision.next_run.run, next_run)
            for message_id in decision.consumed:
                inst.inbox.pop(message_id, None)
            if header.status.is_terminal:
                inst.inbox.clear()
            inst.set_header(header_json)
            for child, child_inst in children:
                if child.instance_id not in self._instances:
                    self._instances[child.instance_id] = child_inst
                elif not header.status.is_terminal:
                    taken = child_taken_message(child)
                    inst.post(taken.id, message_to_json(taken))
            for target_id, message_id, text in outgoing:
                target = self._instances.get(target_id)
                if target is not None and not target.header.status.is_terminal:
                    target.post(message_id, text)
        if on_ready is not None:
            on_ready()
        return header.version

    def post(self, instance_id: str, message: Message) -> bool:
        text = message_to_json(message)
        with self._lock:
            inst = self._get(instance_id)
            if inst.header.status.is_terminal:
                return False
            inst.post(message.id, text)
            return True

    def get(self, instance_id: str) -> InstanceStatus | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            header_json = inst.header_json if inst is not None else None
        return InstanceStatus.model_validate_json(header_json) if header_json else None

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        with self._lock:
            inst = self._get(instance_id)
            return inst.history(run if run is not None else inst.header.run)

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        wanted = statuses(status)
        with self._lock:
            found = [
                (i.header.created_at, i.header.instance_id, i.header_json)
                for i in self._instances.values()
                if (wanted is None or i.header.status in wanted)
                and (workflow is None or i.header.workflow == workflow)
            ]
        found.sort(reverse=True)
        return [InstanceStatus.model_validate_json(text) for _, _, text in found[:limit]]

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        with self._lock:
            found = [
                iid
                for iid, inst in self._instances.items()
                if inst.header.status == Status.PENDING
                or (
                    inst.header.status == Status.RUNNING
                    and (
                        bool(inst.inbox)
                        or (inst.header.wake_at is not None and inst.header.wake_at <= now)
                    )
                )
            ]
        return found[:limit]

    def delete(self, instance_id: str) -> bool:
        with self._lock:
            return self._instances.pop(instance_id, None) is not None

    def close(self) -> None:
        """Nothing to release."""

    def _get(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFoundError(instance_id)
        return inst
