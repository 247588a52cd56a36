"""An in-memory store: for tests and ``durable.run``; everything is lost with the process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from durable.errors import ConflictError, InstanceNotFoundError
from durable.history import Event, InstanceStatus, Message, Status, WorkflowStarted
from durable.replay import Decision
from durable.store.base import Snapshot, child_taken_message, header_for, statuses, updated_header


@dataclass
class _Instance:
    header: InstanceStatus
    runs: dict[int, list[Event]]
    inbox: list[Message] = field(default_factory=list)


class MemoryStore:
    """A :class:`~durable.store.base.HistoryStore` kept in a dict, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        with self._lock:
            return self._create(instance_id, started)

    def _create(self, instance_id: str, started: WorkflowStarted) -> bool:
        if instance_id in self._instances:
            return False
        self._instances[instance_id] = _Instance(
            header_for(instance_id, started), {started.run: [started]}
        )
        return True

    def load(self, instance_id: str) -> Snapshot:
        with self._lock:
            inst = self._get(instance_id)
            return Snapshot(inst.header, list(inst.runs[inst.header.run]), list(inst.inbox))

    def commit(self, decision: Decision, *, expected_version: int) -> int:
        with self._lock:
            inst = self._instances.get(decision.instance_id)
            if inst is None:
                raise InstanceNotFoundError(decision.instance_id)
            if inst.header.version != expected_version:
                raise ConflictError(decision.instance_id, expected_version, inst.header.version)
            header = updated_header(inst.header, decision)
            inst.runs[inst.header.run].extend(decision.events)
            if decision.next_run is not None:
                inst.runs[decision.next_run.run] = [decision.next_run]
            consumed = set(decision.consumed)
            inst.inbox = [m for m in inst.inbox if m.id not in consumed]
            if header.status.is_terminal:
                inst.inbox.clear()
            inst.header = header
            for child in decision.children:
                if not self._create(child.instance_id, child.started):
                    inst.inbox.append(child_taken_message(child))
            for outgoing in decision.messages:
                target = self._instances.get(outgoing.instance_id)
                if target is not None and not target.header.status.is_terminal:
                    target.inbox.append(outgoing.message)
            return header.version

    def post(self, instance_id: str, message: Message) -> bool:
        with self._lock:
            inst = self._get(instance_id)
            if inst.header.status.is_terminal:
                return False
            if all(m.id != message.id for m in inst.inbox):
                inst.inbox.append(message)
            return True

    def get(self, instance_id: str) -> InstanceStatus | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return inst.header if inst is not None else None

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        with self._lock:
            inst = self._get(instance_id)
            return list(inst.runs.get(run if run is not None else inst.header.run, []))

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        wanted = statuses(status)
        with self._lock:
            headers = [
                i.header
                for i in self._instances.values()
                if (wanted is None or i.header.status in wanted)
                and (workflow is None or i.header.workflow == workflow)
            ]
        headers.sort(key=lambda h: (h.created_at, h.instance_id), reverse=True)
        return headers[:limit]

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        with self._lock:
            found = [
                iid
                for iid, inst in self._instances.items()
                if inst.header.status in (Status.PENDING, Status.RUNNING)
                and (
                    inst.header.status == Status.PENDING
                    or inst.inbox
                    or (inst.header.wake_at is not None and inst.header.wake_at <= now)
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
