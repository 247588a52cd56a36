"""History events, inbox messages and instance status: the data `durable` stores.

The history of an instance is an append-only list of :data:`Event` values, a
pydantic union discriminated by ``kind``. Each event carries ``seq`` (its
position in the run's log, from 1) and ``timestamp``; events that answer a
command carry the command's ``task_id`` (its position among the commands the
workflow issued). Inbox messages (:data:`Message`) are what arrives from
outside between steps: activity results, raised events, child results,
cancel and terminate requests. The engine turns consumed messages into events.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from durable.codec import ErrorInfo


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Status(enum.StrEnum):
    """Where an instance stands."""

    PENDING = "PENDING"
    """Created, not yet stepped."""
    RUNNING = "RUNNING"
    """Stepped at least once; waiting on activities, timers, events or children."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINATED = "TERMINATED"
    STUCK = "STUCK"
    """Its code no longer matches its history; kept as is until a fixed deploy resumes it."""

    @property
    def is_terminal(self) -> bool:
        """Whether the instance has ended for good."""
        return self in _TERMINAL


_TERMINAL = {Status.COMPLETED, Status.FAILED, Status.CANCELED, Status.TERMINATED}


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ----------------------------------------------------------------------------- events


class _Event(_Record):
    seq: int = 0
    timestamp: datetime = Field(default_factory=utcnow)


class _Command(_Event):
    """An event recording a command the workflow issued (matched on replay)."""

    task_id: int
    name: str | None = None
    """The display name given with ``name=`` (shown in history and status views)."""


class WorkflowStarted(_Event):
    kind: Literal["WorkflowStarted"] = "WorkflowStarted"
    workflow: str
    input: Any = None
    run: int = 1
    parent_id: str | None = None
    parent_task_id: int | None = None
    parent_run: int | None = None


class ActivityScheduled(_Command):
    kind: Literal["ActivityScheduled"] = "ActivityScheduled"
    activity: str
    input: Any = None
    attempt: int = 1
    """1 for the first attempt; a retry is recorded as a new ActivityScheduled with attempt > 1."""
    timeout: float | None = None


class ActivityCompleted(_Event):
    kind: Literal["ActivityCompleted"] = "ActivityCompleted"
    task_id: int
    attempt: int = 1
    result: Any = None


class ActivityFailed(_Event):
    kind: Literal["ActivityFailed"] = "ActivityFailed"
    task_id: int
    attempt: int = 1
    error: ErrorInfo


class ActivityRetryScheduled(_Event):
    kind: Literal["ActivityRetryScheduled"] = "ActivityRetryScheduled"
    task_id: int
    attempt: int
    """The attempt that failed."""
    fire_at: datetime
    """When the next attempt starts."""
    error: ErrorInfo


class ActivityRedispatched(_Event):
    """The driver found attempt ``attempt`` lost (no outcome long after it was dispatched)
    and dispatched it again; the attempt counts as lost again only that long after this."""

    kind: Literal["ActivityRedispatched"] = "ActivityRedispatched"
    task_id: int
    attempt: int


class TimerScheduled(_Command):
    kind: Literal["TimerScheduled"] = "TimerScheduled"
    fire_at: datetime


class TimerFired(_Event):
    kind: Literal["TimerFired"] = "TimerFired"
    task_id: int


class EventWaitStarted(_Command):
    kind: Literal["EventWaitStarted"] = "EventWaitStarted"
    event: str
    timeout_at: datetime | None = None


class EventRaised(_Event):
    kind: Literal["EventRaised"] = "EventRaised"
    event: str
    data: Any = None


class ChildScheduled(_Command):
    kind: Literal["ChildScheduled"] = "ChildScheduled"
    workflow: str
    input: Any = None
    child_id: str


class ChildCompleted(_Event):
    kind: Literal["ChildCompleted"] = "ChildCompleted"
    task_id: int
    result: Any = None


class ChildFailed(_Event):
    kind: Literal["ChildFailed"] = "ChildFailed"
    task_id: int
    status: Status = Status.FAILED
    error: ErrorInfo


class SideEffectRecorded(_Command):
    kind: Literal["SideEffectRecorded"] = "SideEffectRecorded"
    effect: Literal["now", "uuid", "random"]
    value: Any = None


class StatusSet(_Event):
    kind: Literal["StatusSet"] = "StatusSet"
    value: Any = None


class PatchMarker(_Command):
    kind: Literal["PatchMarker"] = "PatchMarker"
    patch_id: str


class CancelRequested(_Event):
    kind: Literal["CancelRequested"] = "CancelRequested"
    reason: str = ""


class WorkflowCompleted(_Event):
    kind: Literal["WorkflowCompleted"] = "WorkflowCompleted"
    result: Any = None


class WorkflowFailed(_Event):
    kind: Literal["WorkflowFailed"] = "WorkflowFailed"
    error: ErrorInfo


class WorkflowCanceled(_Event):
    kind: Literal["WorkflowCanceled"] = "WorkflowCanceled"
    reason: str = ""
    error: ErrorInfo | None = None


class WorkflowContinuedAsNew(_Event):
    kind: Literal["WorkflowContinuedAsNew"] = "WorkflowContinuedAsNew"
    input: Any = None


class WorkflowTerminated(_Event):
    kind: Literal["WorkflowTerminated"] = "WorkflowTerminated"
    reason: str = ""


Event = Annotated[
    WorkflowStarted
    | ActivityScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityRetryScheduled
    | ActivityRedispatched
    | TimerScheduled
    | TimerFired
    | EventWaitStarted
    | EventRaised
    | ChildScheduled
    | ChildCompleted
    | ChildFailed
    | SideEffectRecorded
    | StatusSet
    | PatchMarker
    | CancelRequested
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCanceled
    | WorkflowContinuedAsNew
    | WorkflowTerminated,
    Field(discriminator="kind"),
]
"""Any history event (a pydantic union discriminated by ``kind``)."""

CommandEvent = (
    ActivityScheduled
    | TimerScheduled
    | EventWaitStarted
    | ChildScheduled
    | SideEffectRecorded
    | PatchMarker
)
"""The events that record a command the workflow issued, matched by ``task_id`` on replay."""

FINAL_EVENTS = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCanceled,
    WorkflowContinuedAsNew,
    WorkflowTerminated,
)
"""Event types that end a run; nothing follows them in its history."""

# ----------------------------------------------------------------------------- inbox


def new_message_id() -> str:
    """A unique, roughly time-ordered message id."""
    return f"{utcnow().strftime('%Y%m%d%H%M%S%f')}-{uuid.uuid4().hex[:12]}"


class _Message(_Record):
    id: str = Field(default_factory=new_message_id)
    received_at: datetime = Field(default_factory=utcnow)


class ActivityResult(_Message):
    """The outcome of one activity attempt, posted by whoever ran it."""

    kind: Literal["activity_result"] = "activity_result"
    task_id: int
    run: int
    attempt: int
    result: Any = None
    error: ErrorInfo | None = None


class AttemptLost(_Message):
    """A driver's note that it dispatches attempt ``attempt`` again: no outcome came long
    after it was dispatched. Recorded as ``ActivityRedispatched`` while that attempt is
    still the one in flight; dropped otherwise."""

    kind: Literal["attempt_lost"] = "attempt_lost"
    task_id: int
    run: int
    attempt: int


class EventMessage(_Message):
    """An external event raised to the instance."""

    kind: Literal["event"] = "event"
    event: str
    data: Any = None


class ChildResult(_Message):
    """A child instance ended; posted to its parent in the child's final commit."""

    kind: Literal["child_result"] = "child_result"
    task_id: int
    run: int
    child_id: str
    status: Status
    result: Any = None
    error: ErrorInfo | None = None


class CancelMessage(_Message):
    """Request to cancel: the workflow sees ``Cancelled`` at its current ``yield``."""

    kind: Literal["cancel"] = "cancel"
    reason: str = ""


class TerminateMessage(_Message):
    """Request to end the instance at once, running no more of its code."""

    kind: Literal["terminate"] = "terminate"
    reason: str = ""


Message = Annotated[
    ActivityResult | AttemptLost | EventMessage | ChildResult | CancelMessage | TerminateMessage,
    Field(discriminator="kind"),
]
"""Anything posted to an instance's inbox."""

# ----------------------------------------------------------------------------- status


class InstanceStatus(BaseModel):
    """Where one instance stands: its store header, as shown by ``status``."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str
    workflow: str
    status: Status
    input: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    custom_status: Any = None
    created_at: datetime
    updated_at: datetime
    run: int = 1
    """The run number: 1, then one more after every continue-as-new."""
    version: int = 0
    """Commit counter used for optimistic concurrency."""
    wake_at: datetime | None = None
    """When the next timer of the instance is due (None if it waits on none)."""
    parent_id: str | None = None


# ----------------------------------------------------------------------------- json i/o

_EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


def dump_history(events: Sequence[Event], *, indent: int | None = 2) -> str:
    """Serialize a history to JSON (loadable again with :func:`load_history`)."""
    return json.dumps(
        [e.model_dump(mode="json") for e in events], indent=indent, ensure_ascii=False
    )


def load_history(text: str | bytes) -> list[Event]:
    """Parse a history serialized by :func:`dump_history`."""
    return _EVENTS.validate_json(text)


def event_to_json(event: Event) -> str:
    """One event as compact JSON (the stores' row format)."""
    return event.model_dump_json()


def event_from_json(text: str | bytes) -> Event:
    """Parse one event written by :func:`event_to_json`."""
    return _EVENT.validate_json(text)


def message_to_json(message: Message) -> str:
    """One inbox message as compact JSON."""
    return message.model_dump_json()


def message_from_json(text: str | bytes) -> Message:
    """Parse one inbox message written by :func:`message_to_json`."""
    return _MESSAGE.validate_json(text)
