"""What the CLI shows about instances: history details, progress lines and views.

Kept apart from :mod:`durable.cli` (the commands) so that each stays short.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from durable.errors import DurableError
from durable.history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityRedispatched,
    ActivityRetryScheduled,
    ActivityScheduled,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildScheduled,
    Event,
    EventRaised,
    EventWaitStarted,
    InstanceStatus,
    Message,
    PatchMarker,
    SideEffectRecorded,
    Status,
    StatusSet,
    TimerFired,
    TimerScheduled,
    WorkflowCanceled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable.replay import Decision
from durable.runtime.clock import VirtualClock
from durable.runtime.local import Runtime
from durable.store import HistoryStore, Snapshot

ALL = 1_000_000
"""A listing limit meaning "every instance"."""


def one_line_text(text: str) -> str:
    return " ".join(text.split())


def short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


# ----------------------------------------------------------------------------- history labels


class Labels:
    """Display names of an instance's commands, by task id, so that answers can show them too."""

    def __init__(self) -> None:
        self._labels: dict[int, str] = {}
        self._names: dict[int, str] = {}

    def learn(self, event: Event) -> None:
        """Remember the label of a command event (others are ignored)."""
        if isinstance(event, ActivityScheduled) and event.attempt == 1:
            label = _labelled(event.name, event.activity)
        elif isinstance(event, TimerScheduled):
            label = event.name or "timer"
        elif isinstance(event, EventWaitStarted):
            label = _labelled(event.name, f"event {event.event!r}")
        elif isinstance(event, ChildScheduled):
            label = _labelled(event.name, f"child {event.workflow}")
        else:
            return
        self._labels[event.task_id] = label
        if event.name:
            self._names[event.task_id] = event.name

    def name(self, event: Event) -> str:
        """The ``name=`` given to the command an event records or answers ("" if none)."""
        task_id = getattr(event, "task_id", None)
        return self._names.get(task_id, "") if isinstance(task_id, int) else ""

    def of(self, task_id: int) -> str:
        """The display name and what the command is, e.g. ``First reminder (send_email)``."""
        return self._labels.get(task_id, f"task #{task_id}")


def _labelled(name: str | None, what: str) -> str:
    return f"{name} ({what})" if name else what


def details(event: Event) -> str:
    """What the history table shows about an event besides its kind and name."""
    match event:
        case WorkflowStarted():
            run = f" run {event.run}" if event.run > 1 else ""
            return f"{event.workflow}{run} input={short(event.input)}"
        case ActivityScheduled():
            attempt = f" attempt {event.attempt}" if event.attempt > 1 else ""
            return f"{event.activity}{attempt} args={short(event.input)}"
        case ActivityCompleted():
            return f"result={short(event.result)}"
        case ActivityFailed():
            return f"attempt {event.attempt}: {event.error.type}: {short(event.error.message)}"
        case ActivityRetryScheduled():
            return (
                f"attempt {event.attempt} failed ({event.error.type}: "
                f"{short(event.error.message, 40)}); next at {when(event.fire_at)}"
            )
        case ActivityRedispatched():
            return f"attempt {event.attempt} dispatched again (no outcome came: lost invocation)"
        case TimerScheduled():
            return f"fires at {when(event.fire_at)}"
        case EventWaitStarted():
            timeout = f", timeout at {when(event.timeout_at)}" if event.timeout_at else ""
            return f"event {event.event!r}{timeout}"
        case EventRaised():
            return f"event {event.event!r} data={short(event.data)}"
        case ChildScheduled():
            return f"{event.workflow} as {event.child_id} input={short(event.input)}"
        case ChildCompleted():
            return f"result={short(event.result)}"
        case ChildFailed():
            return f"{event.status.value}: {event.error.type}: {short(event.error.message)}"
        case SideEffectRecorded():
            return f"{event.effect}() = {short(event.value)}"
        case StatusSet():
            return f"status={short(event.value)}"
        case PatchMarker():
            return f"patch {event.patch_id!r}"
        case CancelRequested() | WorkflowTerminated():
            return event.reason
        case WorkflowCompleted():
            return f"result={short(event.result)}"
        case WorkflowFailed():
            return f"{event.error.type}: {short(event.error.message)}"
        case WorkflowCanceled():
            return event.reason
        case WorkflowContinuedAsNew():
            return f"input={short(event.input)}"
    return ""  # pragma: no cover - every event kind is listed above


def progress_line(event: Event, labels: Labels) -> str | None:
    """One line of ``run``/``worker`` progress for an event, or None for bookkeeping ones."""
    match event:
        case ActivityScheduled():
            attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            return f"▶ {labels.of(event.task_id)}{attempt}"
        case ActivityCompleted():
            return f"✓ {labels.of(event.task_id)}"
        case ActivityFailed():
            return f"✗ {labels.of(event.task_id)}: {event.error.type}: {short(event.error.message)}"
        case ActivityRetryScheduled():
            return (
                f"↻ {labels.of(event.task_id)} attempt {event.attempt} failed "
                f"({event.error.type}: {short(event.error.message, 40)}); "
                f"retrying at {when(event.fire_at)}"
            )
        case ActivityRedispatched():
            return (
                f"↻ {labels.of(event.task_id)} attempt {event.attempt} dispatched again "
                "(no outcome came)"
            )
        case TimerScheduled():
            return f"⏲ {labels.of(event.task_id)} until {when(event.fire_at)} UTC"
        case TimerFired():
            return f"✓ {labels.of(event.task_id)} fired"
        case EventWaitStarted():
            return f"… {labels.of(event.task_id)}: waiting"
        case EventRaised():
            return f"✉ event {event.event!r} received"
        case ChildScheduled():
            return f"▶ {labels.of(event.task_id)} as {event.child_id}"
        case ChildCompleted():
            return f"✓ {labels.of(event.task_id)}"
        case ChildFailed():
            return f"✗ {labels.of(event.task_id)} {event.status.value}: {event.error.type}"
        case StatusSet():
            return f"status: {short(event.value)}"
        case CancelRequested():
            return "cancel requested"
        case WorkflowContinuedAsNew():
            return "↻ continued as new"
    return None


# ----------------------------------------------------------------------------- run progress


class Progress:
    """The progress of ``durable run``: a line per step on stderr, plus a live status on a terminal.

    Lines (activity done, timer set, event received, ...) are printed as they
    are recorded; on a terminal a spinner below them shows what the workflow
    waits on now, when its next timer fires and how far virtual time moved.
    """

    def __init__(
        self, console: Console, store: HistoryStore, runtime: Runtime, instance_id: str
    ) -> None:
        self.console = console
        self.store = store
        self.runtime = runtime
        self.instance_id = instance_id
        self.started = time.monotonic()
        self.started_at = runtime.clock.now()
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._run = 0
        self._seen = 0
        self._labels = Labels()
        self._waiting: list[str] = []
        self._wake_at: datetime | None = None
        self._spinner = Spinner("dots", "starting")
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=8,
                transient=True,
            )
            self._live.__enter__()
        self.refresh(None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def on_step(self, instance_id: str, decision: Decision) -> None:
        """A runtime step listener: show what the step of our instance recorded."""
        if instance_id == self.instance_id:
            self.refresh(decision)

    def refresh(self, decision: Decision | None) -> None:
        """Print the events recorded since the last call and update the live status."""
        with self._print_lock:  # keeps lines in order when two threads refresh at once
            self._refresh(decision)

    def _refresh(self, decision: Decision | None) -> None:
        try:
            header = self.store.get(self.instance_id)
            history = self.store.history(self.instance_id)
        except DurableError:
            return
        fresh: list[str] = []
        with self._lock:
            if header is not None and header.run != self._run:
                self._run, self._seen, self._labels = header.run, 0, Labels()
            for event in history:
                if event.seq <= self._seen:
                    continue
                self._seen = event.seq
                self._labels.learn(event)
                line = progress_line(event, self._labels)
                if line is not None:
                    fresh.append(line)
            if decision is not None:
                self._waiting = list(decision.waiting_on)
                self._wake_at = decision.wake_at
            elif header is not None:
                self._wake_at = header.wake_at
        # Printed outside _lock: the live display's refresh thread takes it in _render.
        for line in fresh:
            self.console.print(Text(f"  {line}"))

    def skipped(self) -> timedelta | None:
        """How far virtual time moved since the run began (None without time skipping)."""
        if not isinstance(self.runtime.clock, VirtualClock):
            return None
        return self.runtime.clock.now() - self.started_at

    def summary(self) -> str:
        """Wall time taken, and virtual time moved when skipping time."""
        wall = time.monotonic() - self.started
        skipped = self.skipped()
        moved = f"; virtual time moved {duration(skipped)}" if skipped is not None else ""
        return f"{wall:.2f}s wall time{moved}"

    def _render(self) -> Spinner:
        with self._lock:
            waiting, wake_at = list(self._waiting), self._wake_at
        parts = [f"waiting on {', '.join(waiting)}" if waiting else "working"]
        if wake_at is not None:
            left = max(wake_at - self.runtime.clock.now(), timedelta(0))
            parts.append(f"next timer {when(wake_at)} UTC (in {duration(left)})")
        skipped = self.skipped()
        if skipped is not None:
            parts.append(f"virtual time +{duration(skipped)}")
        self._spinner.update(text=Text(" · ".join(parts)))
        return self._spinner


def duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{secs}s"] if secs or not parts else []
    return " ".join(parts)


class Subtree:
    """A view of a store showing only some instances and their descendants.

    A :class:`Runtime` drives every unfinished instance it can see; ``run``
    hands it this view so that it drives the one instance asked for (and its
    children) and leaves the rest of a shared store alone.
    """

    def __init__(self, store: HistoryStore, roots: Sequence[str]) -> None:
        self._store = store
        self._members = set(roots)
        self.path: str | None = getattr(store, "path", None)
        """The wrapped store's file, so that a runtime sees the other workers on it."""

    def _member(self, instance_id: str) -> bool:
        chain: list[str] = []
        current: str | None = instance_id
        for _ in range(64):
            if current is None:
                return False
            if current in self._members:
                self._members.update(chain)
                return True
            chain.append(current)
            header = self._store.get(current)
            current = header.parent_id if header is not None else None
        return False

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        return self._store.create(instance_id, started)

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        return self._store.load(instance_id, after=after)

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        return self._store.commit(decision, expected_version=expected_version, on_ready=on_ready)

    def post(self, instance_id: str, message: Message) -> bool:
        return self._store.post(instance_id, message)

    def get(self, instance_id: str) -> InstanceStatus | None:
        return self._store.get(instance_id)

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        return self._store.history(instance_id, run)

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        found = self._store.list_instances(status=status, workflow=workflow, limit=ALL)
        return [h for h in found if self._member(h.instance_id)][:limit]

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        return [i for i in self._store.ready(now, limit=ALL) if self._member(i)][:limit]

    def delete(self, instance_id: str) -> bool:
        return self._store.delete(instance_id)

    def close(self) -> None:
        """The view does not own the store: closing it is the caller's job."""


class WorkerReport:
    """Progress lines of ``worker``: one per event, prefixed with the instance id."""

    def __init__(self, console: Console, modules: str) -> None:
        self.console = console
        self.modules = modules
        self.store: HistoryStore | None = None
        self.errors = 0
        self._reported: set[str] = set()
        self._seen: dict[tuple[str, int], int] = {}
        self._labels: dict[tuple[str, int], Labels] = {}
        self._lock = threading.Lock()

    def on_step(self, instance_id: str, decision: Decision) -> None:
        with self._lock:
            if decision.status == Status.STUCK:
                self._stuck(instance_id, decision)
                return
            self._reported.discard(instance_id)
            if self.store is None:
                return
            key = (instance_id, decision.run)
            labels = self._labels.setdefault(key, Labels())
            seen = self._seen.get(key, 0)
            for event in self.store.history(instance_id, decision.run):
                if event.seq <= seen:
                    continue
                seen = event.seq
                labels.learn(event)
                line = progress_line(event, labels)
                if isinstance(event, WorkflowStarted) and event.seq == 1:
                    line = f"started {event.workflow}"
                elif isinstance(event, WorkflowCompleted):
                    line = f"completed: {short(event.result, 100)}"
                elif isinstance(event, WorkflowFailed | WorkflowCanceled | WorkflowTerminated):
                    line = f"ended {decision.status.value}: {details(event)}"
                if line is not None:
                    self.console.print(Text(f"{instance_id} {line}"))
            self._seen[key] = seen

    def _stuck(self, instance_id: str, decision: Decision) -> None:
        if instance_id in self._reported:
            return
        self._reported.add(instance_id)
        self.errors += 1
        error = decision.error
        if error is not None and error.type.endswith("UnknownWorkflowError"):
            header = self.store.get(instance_id) if self.store is not None else None
            name = header.workflow if header is not None else "?"
            message = (
                f"instance {instance_id} runs workflow {name!r}, which none of the loaded "
                f"modules ({self.modules}) registers; it stays STUCK until a worker has its code"
            )
        else:
            detail = one_line_text(error.message) if error is not None else "no detail"
            message = f"instance {instance_id} is STUCK: {detail}"
        self.console.print(Text(f"error: {message}"))
