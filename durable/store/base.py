"""The ``HistoryStore`` protocol: what every store (memory, SQLite, DynamoDB) provides.

An instance is a header (:class:`~durable.history.InstanceStatus`), the
history of each of its runs, and an inbox of messages not yet consumed.
The one write that moves an instance forward is :meth:`HistoryStore.commit`:
all-or-nothing, and refused with :class:`~durable.errors.ConflictError` unless
the header is still at the version the step loaded. Posting to the inbox does
not change the version, so results and events can arrive while a step runs
without making it lose its commit.

Rules every store follows (tests/test_store_conformance.py checks them all):

* Instance ids are non-empty strings of any Unicode, compared exactly: case
  matters, and no id is a prefix match of another (``"a"`` is not ``"a:1"``).
* Payloads (inputs, outputs, results, event data, custom status) are JSON
  values of any size; a store too small for one (a DynamoDB item) puts it
  elsewhere and keeps a pointer, invisibly to callers.
* What a store returns is the caller's own copy: changing it changes nothing
  stored, and neither do later changes to the objects handed to the store.
* Events are kept exactly as given, ``seq`` included; they come back ordered
  by ``seq``, which must be unique within a run.
* A finished instance (``Status.is_terminal``) has an empty inbox and accepts
  no messages. A STUCK instance is unfinished: it keeps and accepts messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

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
        """Create an instance whose run ``started.run`` begins with ``started``.

        The header is PENDING at version 1, with ``workflow``, ``input`` and
        ``parent_id`` from ``started`` and ``created_at`` = ``updated_at`` =
        ``started.timestamp``. Returns False, changing nothing, when the id is
        already taken (by whatever workflow and input: the caller compares).
        """
        ...

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        """Header, current run's history (by ``seq``) and inbox (in arrival order).

        The three are read together: the history and inbox are those of the
        header's version. With ``after`` (a ``seq``), the history holds only the
        events whose ``seq`` is greater (a driver that kept the rest reads only what is new).

        Raises:
            InstanceNotFoundError: unknown id.
        """
        ...

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        """Write a step's decision atomically; return the new version.

        All of it or, on any error, none of it:

        * ``decision.events`` are appended to the current run's history.
        * ``decision.consumed`` ids leave the inbox (ids not there are ignored);
          messages posted since the step loaded stay.
        * The header (see :func:`updated_header`): version + 1, ``updated_at`` =
          ``decision.at``, status, custom status and error from the decision,
          output only when COMPLETED, ``wake_at`` only while unfinished.
        * ``decision.children`` are created as :meth:`create` would. A child id
          already taken leaves that instance untouched and posts the parent a
          failed ``ChildResult`` instead (:func:`child_taken_message`), unless
          this very commit ends the parent.
        * ``decision.messages`` are posted as :meth:`post` would to targets that
          exist and are unfinished (STUCK included), and silently dropped for
          unknown or finished ones: the commit still succeeds.
        * ``decision.next_run`` (continue-as-new): the run that just ended keeps
          its history (see :meth:`history` with ``run``), the next run begins with
          ``next_run``, the header moves to its run and input, RUNNING, with no
          ``wake_at``; messages not consumed stay in the inbox for the new run.
        * A finished status empties the inbox, consumed or not. STUCK keeps it.

        ``on_ready`` is called once the commit can no longer lose to another
        writer: at the latest when it is done, and, in a store that knows
        earlier (SQLite holds the write lock from the version check on), before
        it is on disk, so that the caller can start the decision's activities
        while the commit is flushed. If the store then fails, nothing is
        written and the error is raised after ``on_ready`` was called.

        Raises:
            ConflictError: the header is no longer at ``expected_version``
                (nothing is written).
            InstanceNotFoundError: the instance does not exist (any more).
        """
        ...

    def post(self, instance_id: str, message: Message) -> bool:
        """Append ``message`` to the inbox; False (and nothing written) if the instance ended.

        The version does not change. A message whose id is already in this
        instance's inbox is ignored (and True returned): redelivery is harmless.
        Ids are per instance, so one message may be posted to several; and an id
        consumed earlier is accepted again (the engine drops stale results).

        Raises:
            InstanceNotFoundError: unknown id.
        """
        ...

    def get(self, instance_id: str) -> InstanceStatus | None:
        """The header of an instance, or ``None``."""
        ...

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        """The history of run ``run`` (default: the current run), by ``seq``.

        A run that never existed has an empty history.

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
        """At most ``limit`` headers, newest ``created_at`` first (ties in no set order).

        ``status`` keeps instances in that status or any of several; ``workflow``
        keeps those of that registered name. Both filters apply together.
        """
        ...

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of instances a step would advance at ``now``: each once, at most ``limit``.

        In no set order: every PENDING instance, and every RUNNING one with inbox
        messages or a ``wake_at`` at or before ``now``. Never STUCK instances
        (they wait for new code, see ``list_instances``) nor finished ones.
        """
        ...

    def delete(self, instance_id: str) -> bool:
        """Remove an instance with all its runs and inbox; False if it did not exist.

        Its children are not touched. The id can then be created again afresh.
        """
        ...

    def close(self) -> None:
        """Release connections and files; the store is unusable afterwards."""
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


def header_changes(decision: Decision, version: int) -> dict[str, Any]:
    """The header fields that committing ``decision`` on top of ``version`` changes.

    ``run`` and ``input`` are among them only when the decision begins a new run
    (continue-as-new); otherwise they keep their values.
    """
    status = Status.RUNNING if decision.next_run is not None else decision.status
    changes: dict[str, Any] = {
        "status": status,
        "version": version + 1,
        "updated_at": decision.at,
        "custom_status": decision.custom_status,
        "wake_at": None if status.is_terminal or decision.next_run else decision.wake_at,
        "output": decision.output if status == Status.COMPLETED else None,
        "error": decision.error,
    }
    if decision.next_run is not None:
        changes["run"] = decision.next_run.run
        changes["input"] = decision.next_run.input
    return changes


def updated_header(header: InstanceStatus, decision: Decision) -> InstanceStatus:
    """The header after committing ``decision``."""
    return header.model_copy(update=header_changes(decision, header.version))
