"""What one step decides: the value a driver commits and acts on.

Produced by :func:`durable.replay.replay`, committed by a
:class:`~durable.store.base.HistoryStore`, acted on by the drivers (start
the dispatched activities, wake up at ``wake_at``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from durable.codec import ErrorInfo
from durable.errors import NonDeterminismError
from durable.history import Event, Message, Status, WorkflowStarted

if TYPE_CHECKING:
    from durable.workflow import Activity


@dataclass(frozen=True)
class ActivityWork:
    """One activity attempt to run, as handed to a driver."""

    instance_id: str
    run: int
    task_id: int
    attempt: int
    activity: str
    input: Any
    """The encoded arguments, ``{"args": [...], "kwargs": {...}}``."""
    timeout: float | None
    """Seconds after which the attempt counts as failed (``None``: no limit)."""
    scheduled_at: datetime | None = field(default=None, compare=False)
    """When the history recorded this attempt's ``ActivityScheduled`` (always set by the engine)."""
    dispatched_at: datetime | None = field(default=None, compare=False)
    """When this attempt was last dispatched: ``scheduled_at``, or the last
    ``ActivityRedispatched`` of it (always set by the engine)."""
    dispatches: int = field(default=1, compare=False)
    """How many times this attempt was dispatched: 1, plus one per ``ActivityRedispatched``."""
    fn: Activity[..., Any] | None = field(default=None, compare=False, repr=False)
    """The activity object from the running code (for in-process drivers)."""


@dataclass(frozen=True)
class ChildStart:
    """A child instance to create atomically with the parent's commit."""

    instance_id: str
    started: WorkflowStarted


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to post to another instance's inbox atomically with the commit."""

    instance_id: str
    message: Message


@dataclass
class Decision:
    """What one step decided; a driver commits all of it or nothing."""

    instance_id: str
    run: int
    status: Status
    at: datetime
    """The time the step happened at (the ``now`` it was given)."""
    events: list[Event] = field(default_factory=list)
    """New events, ``seq`` already assigned, to append to the history."""
    consumed: list[str] = field(default_factory=list)
    """Ids of the inbox messages this step used (or dropped as stale)."""
    output: Any = None
    error: ErrorInfo | None = None
    custom_status: Any = None
    dispatch: list[ActivityWork] = field(default_factory=list)
    """Activity attempts scheduled by this step: start them after the commit."""
    pending: list[ActivityWork] = field(default_factory=list)
    """Every attempt still outstanding after this step (for recovery after a crash)."""
    wake_at: datetime | None = None
    """When the earliest timer, event timeout or retry is due (``None``: none)."""
    children: list[ChildStart] = field(default_factory=list)
    messages: list[OutgoingMessage] = field(default_factory=list)
    next_run: WorkflowStarted | None = None
    """Set on continue-as-new: the first event of the next run."""
    more: bool = False
    """True when the step stopped early (event limit) and should be called again at once."""
    waiting_on: list[str] = field(default_factory=list)
    waits_on_others: bool = False
    """Whether it waits on something only others bring (an external event or a child),
    rather than only on timers and activities, which a driver resolves itself."""
    """What the workflow waits for, in words (for progress views)."""
    stuck: NonDeterminismError | None = None
