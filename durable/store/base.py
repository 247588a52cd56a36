"""The ``HistoryStore`` protocol: what every store (memory, SQLite, DynamoDB) provides.

An instance is a header (:class:`~durable.history.InstanceStatus`), the
history of each of its runs, and an inbox of messages not yet consumed.
The one write that moves an instance forward is :meth:`HistoryStore.commit`:
all-or-nothing, and refused with :class:`~durable.errors.ConflictError` unless
the header is still at the version the step loaded. Posting to the inbox does
not change the version, so results and events can arrive while a step runs
without making it lose its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from durable.codec import ErrorInfo
from durable.errors import InstanceExistsError
from durable.history import (
    ChildResult,
    Event,
    InstanceStatus,
    Message,
    Status,
    WorkflowStarted,
)
from durable.replay import ChildStart, Decision


@dataclass(frozen=True)
class Snapshot:
    """An instance as loaded for a step: header, current run's history, inbox."""

    header: InstanceStatus
    history: list[Event]
    inbox: list[Message]

    @property
    def version(self) -> int:
        """The header version a commit must be conditioned on."""
        return self.header.version


@runtime_checkable
class HistoryStore(Protocol):
    """Durable storage of instances; one conformance suite checks every implementation."""

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        """Create an instance whose history begins with ``started``.

        Returns False, changing nothing, when the id is already taken.
        """
        ...

    def load(self, instance_id: str) -> Snapshot:
        """Header, current run's history (by ``seq``) and inbox (in arrival order).

        Raises:
            InstanceNotFoundError: unknown id.
        """
        ...

    def commit(self, decision: Decision, *, expected_version: int) -> int:
        """Write a step's decision atomically; return the new version.

        Appends ``decision.events``, deletes ``decision.consumed`` from the
        inbox, updates the header (status, output, error, custom status,
        wake time), creates ``decision.children`` (a child id already taken
        gets its parent a failed ``ChildResult`` instead), posts
        ``decision.messages`` to instances that exist, starts the next run on
        continue-as-new, and empties the inbox once the instance has ended.

        Raises:
            ConflictError: the header is no longer at ``expected_version``.
        """
        ...

    def post(self, instance_id: str, message: Message) -> bool:
        """Append ``message`` to the inbox; False (and nothing written) if the instance ended.

        Raises:
            InstanceNotFoundError: unknown id.
        """
        ...

    def get(self, instance_id: str) -> InstanceStatus | None:
        """The header of an instance, or ``None``."""
        ...

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        """The history of run ``run`` (default: the current run).

        Raises:
            InstanceNotFoundError: unknown id.
        """
        ...

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        """Instances, newest first, filtered by status(es) and workflow name."""
        ...

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of RUNNING or PENDING instances with work: inbox messages, due timers, or never stepped."""
        ...

    def delete(self, instance_id: str) -> bool:
        """Remove an instance with all its runs and inbox; False if it did not exist."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def statuses(status: Status | Sequence[Status] | None) -> list[Status] | None:
    """Normalize a status filter to a list (``None`` for no filter)."""
    if status is None:
        return None
    if isinstance(status, str):
        return [Status(status)]
    return [Status(s) for s in status]


def child_taken_message(child: ChildStart) -> ChildResult:
    """What a parent gets when the id it asked for its child already belongs to another."""
    started = child.started
    error = ErrorInfo.from_exception(
        InstanceExistsError(child.instance_id, "and belongs to another workflow instance")
    )
    assert started.parent_task_id is not None
    return ChildResult(
        task_id=started.parent_task_id,
        run=started.parent_run or 1,
        child_id=child.instance_id,
        status=Status.FAILED,
        error=error,
    )


def header_for(instance_id: str, started: WorkflowStarted) -> InstanceStatus:
    """The header of a freshly created instance."""
    return InstanceStatus(
        instance_id=instance_id,
        workflow=started.workflow,
        status=Status.PENDING,
        input=started.input,
        created_at=started.timestamp,
        updated_at=started.timestamp,
        run=started.run,
        version=1,
        parent_id=started.parent_id,
    )


def updated_header(header: InstanceStatus, decision: Decision) -> InstanceStatus:
    """The header after committing ``decision``."""
    status = decision.status
    run = header.run
    input_ = header.input
    if decision.next_run is not None:
        run = decision.next_run.run
        input_ = decision.next_run.input
        status = Status.RUNNING
    changes = {
        "status": status,
        "version": header.version + 1,
        "updated_at": decision.at,
        "run": run,
        "input": input_,
        "custom_status": decision.custom_status,
        "wake_at": None if status.is_terminal else decision.wake_at,
        "output": decision.output if status == Status.COMPLETED else None,
        "error": decision.error,
    }
    if decision.next_run is not None:
        changes["wake_at"] = None
    return header.model_copy(update=changes)
