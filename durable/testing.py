"""Helpers for testing workflows: history factories and a history replayer.

Build a history by hand and ask the engine what it decides::

    from durable.replay import replay
    from durable.testing import EPOCH, activity_completed, activity_scheduled, build_history, started

    history = build_history(
        started(my_workflow, {"user": "ada"}),
        activity_scheduled(1, send_email, ({"user": "ada"},)),
        activity_completed(1, "sent"),
    )
    decision = replay(my_workflow, history, [], EPOCH, instance_id="test")

Or check that the current code still replays a history recorded earlier
(exported with ``durable history ID --json`` or :func:`durable.dump_history`)::

    replay_history(my_workflow, Path("tests/golden/my_workflow.json"))

Event factories return events with ``seq=0``; :func:`build_history` numbers
them and stamps them with one fixed time, so histories built in tests are
exactly reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from durable.codec import ErrorInfo, encode, encode_arguments
from durable.history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityResult,
    ActivityRetryScheduled,
    ActivityScheduled,
    CancelMessage,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildResult,
    ChildScheduled,
    Event,
    EventMessage,
    EventRaised,
    EventWaitStarted,
    PatchMarker,
    SideEffectRecorded,
    Status,
    StatusSet,
    TerminateMessage,
    TimerFired,
    TimerScheduled,
    WorkflowCanceled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTerminated,
    load_history,
)
from durable.replay import Decision, replay
from durable.workflow import Activity, Workflow

__all__ = [
    "EPOCH",
    "activity_completed",
    "activity_failed",
    "activity_result",
    "activity_retry_scheduled",
    "activity_scheduled",
    "build_history",
    "cancel_message",
    "cancel_requested",
    "child_completed",
    "child_failed",
    "child_result",
    "child_scheduled",
    "event_message",
    "event_raised",
    "event_wait_started",
    "patch_marker",
    "replay_history",
    "side_effect",
    "started",
    "status_set",
    "terminate_message",
    "timer_fired",
    "timer_scheduled",
    "workflow_canceled",
    "workflow_completed",
    "workflow_continued_as_new",
    "workflow_failed",
    "workflow_terminated",
]

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
"""The default time of built histories and messages: fixed, so tests are reproducible."""


def build_history(*events: Event, at: datetime = EPOCH) -> list[Event]:
    """Number ``events`` 1..n (``seq``) and stamp each with ``at``."""
    return [e.model_copy(update={"seq": i, "timestamp": at}) for i, e in enumerate(events, 1)]


# ----------------------------------------------------------------------------- events


def started(workflow: Workflow[Any, Any] | str, input: Any = None, *, run: int = 1) -> Event:
    """``WorkflowStarted`` of ``workflow`` (its input encoded with the workflow's codec)."""
    if isinstance(workflow, Workflow):
        return WorkflowStarted(workflow=workflow.name, input=encode(input, workflow.codec), run=run)
    return WorkflowStarted(workflow=workflow, input=encode(input), run=run)


def activity_scheduled(
    task_id: int,
    activity: Activity[..., Any] | Callable[..., Any] | str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    attempt: int = 1,
    name: str | None = None,
    timeout: float | None = None,
) -> Event:
    """``ActivityScheduled``: command ``task_id`` runs ``activity(*args, **kwargs)``."""
    kwargs = kwargs or {}
    if isinstance(activity, Activity):
        label = activity.name
        payload = encode_arguments(activity.fn, tuple(args), kwargs, activity.codec, label)
    elif isinstance(activity, str):
        label = activity
        payload = {"args": [encode(a) for a in args], "kwargs": encode(kwargs)}
    else:
        label = activity.__name__
        payload = encode_arguments(activity, tuple(args), kwargs, "json", label)
    return ActivityScheduled(
        task_id=task_id,
        activity=label,
        input=payload,
        attempt=attempt,
        name=name,
        timeout=timeout,
    )


def activity_completed(task_id: int, result: Any = None, *, attempt: int = 1) -> Event:
    """``ActivityCompleted`` of command ``task_id`` with ``result`` (JSON-encoded)."""
    return ActivityCompleted(task_id=task_id, attempt=attempt, result=encode(result))


def activity_failed(task_id: int, error: BaseException, *, attempt: int = 1) -> Event:
    """``ActivityFailed``: the last attempt of command ``task_id`` raised ``error``."""
    return ActivityFailed(task_id=task_id, attempt=attempt, error=ErrorInfo.from_exception(error))


def activity_retry_scheduled(
    task_id: int, error: BaseException, fire_at: datetime, *, attempt: int = 1
) -> Event:
    """``ActivityRetryScheduled``: attempt ``attempt`` failed, the next starts at ``fire_at``."""
    return ActivityRetryScheduled(
        task_id=task_id, attempt=attempt, fire_at=fire_at, error=ErrorInfo.from_exception(error)
    )


def timer_scheduled(task_id: int, fire_at: datetime, *, name: str | None = None) -> Event:
    """``TimerScheduled``: command ``task_id`` is a timer due at ``fire_at``."""
    return TimerScheduled(task_id=task_id, fire_at=fire_at, name=name)


def timer_fired(task_id: int) -> Event:
    """``TimerFired`` for the timer (or event-wait deadline) of command ``task_id``."""
    return TimerFired(task_id=task_id)


def event_wait_started(
    task_id: int, event: str, *, timeout_at: datetime | None = None, name: str | None = None
) -> Event:
    """``EventWaitStarted``: command ``task_id`` waits for ``event``."""
    return EventWaitStarted(task_id=task_id, event=event, timeout_at=timeout_at, name=name)


def event_raised(event: str, data: Any = None) -> Event:
    """``EventRaised``: the external event ``event`` arrived with ``data``."""
    return EventRaised(event=event, data=encode(data))


def child_scheduled(
    task_id: int,
    workflow: Workflow[Any, Any] | str,
    input: Any = None,
    *,
    child_id: str | None = None,
    name: str | None = None,
) -> Event:
    """``ChildScheduled``: command ``task_id`` starts a child instance of ``workflow``."""
    label = workflow.name if isinstance(workflow, Workflow) else workflow
    return ChildScheduled(
        task_id=task_id,
        workflow=label,
        input=encode(input),
        child_id=child_id or f"child-{task_id}",
        name=name,
    )


def child_completed(task_id: int, result: Any = None) -> Event:
    """``ChildCompleted``: the child of command ``task_id`` returned ``result``."""
    return ChildCompleted(task_id=task_id, result=encode(result))


def child_failed(task_id: int, error: BaseException, *, status: Status = Status.FAILED) -> Event:
    """``ChildFailed``: the child of command ``task_id`` ended ``status`` with ``error``."""
    return ChildFailed(task_id=task_id, status=status, error=ErrorInfo.from_exception(error))


def side_effect(task_id: int, effect: Literal["now", "uuid", "random"], value: Any) -> Event:
    """``SideEffectRecorded``: command ``task_id`` (``ctx.now()``, ...) recorded ``value``."""
    return SideEffectRecorded(task_id=task_id, effect=effect, value=value)


def status_set(value: Any) -> Event:
    """``StatusSet``: the workflow published custom status ``value``."""
    return StatusSet(value=encode(value))


def patch_marker(task_id: int, patch_id: str) -> Event:
    """``PatchMarker``: command ``task_id`` took the new path of change ``patch_id``."""
    return PatchMarker(task_id=task_id, patch_id=patch_id)


def cancel_requested(reason: str = "") -> Event:
    """``CancelRequested``: someone asked to cancel the instance."""
    return CancelRequested(reason=reason)


def workflow_completed(result: Any = None) -> Event:
    """``WorkflowCompleted`` with ``result`` (JSON-encoded)."""
    return WorkflowCompleted(result=encode(result))


def workflow_failed(error: BaseException) -> Event:
    """``WorkflowFailed`` with ``error``."""
    return WorkflowFailed(error=ErrorInfo.from_exception(error))


def workflow_canceled(reason: str = "") -> Event:
    """``WorkflowCanceled`` (the workflow let ``Cancelled`` escape)."""
    return WorkflowCanceled(reason=reason)


def workflow_continued_as_new(input: Any = None) -> Event:
    """``WorkflowContinuedAsNew`` with the next run's ``input``."""
    return WorkflowContinuedAsNew(input=encode(input))


def workflow_terminated(reason: str = "") -> Event:
    """``WorkflowTerminated``."""
    return WorkflowTerminated(reason=reason)


# ----------------------------------------------------------------------------- inbox messages


def activity_result(
    task_id: int,
    result: Any = None,
    *,
    error: BaseException | None = None,
    attempt: int = 1,
    run: int = 1,
    at: datetime = EPOCH,
) -> ActivityResult:
    """The inbox message of one attempt: ``result``, or ``error`` when given."""
    return ActivityResult(
        task_id=task_id,
        run=run,
        attempt=attempt,
        result=None if error is not None else encode(result),
        error=ErrorInfo.from_exception(error) if error is not None else None,
        received_at=at,
    )


def event_message(event: str, data: Any = None, *, at: datetime = EPOCH) -> EventMessage:
    """The inbox message of the external event ``event`` raised with ``data``."""
    return EventMessage(event=event, data=encode(data), received_at=at)


def child_result(
    task_id: int,
    result: Any = None,
    *,
    error: BaseException | None = None,
    status: Status | None = None,
    child_id: str | None = None,
    run: int = 1,
    at: datetime = EPOCH,
) -> ChildResult:
    """The inbox message of a child that ended: COMPLETED with ``result``, or FAILED with ``error``."""
    if status is None:
        status = Status.FAILED if error is not None else Status.COMPLETED
    return ChildResult(
        task_id=task_id,
        run=run,
        child_id=child_id or f"child-{task_id}",
        status=status,
        result=encode(result) if error is None else None,
        error=ErrorInfo.from_exception(error) if error is not None else None,
        received_at=at,
    )


def cancel_message(reason: str = "", *, at: datetime = EPOCH) -> CancelMessage:
    """The inbox message asking to cancel the instance."""
    return CancelMessage(reason=reason, received_at=at)


def terminate_message(reason: str = "", *, at: datetime = EPOCH) -> TerminateMessage:
    """The inbox message asking to terminate the instance."""
    return TerminateMessage(reason=reason, received_at=at)


# ----------------------------------------------------------------------------- replayer


def replay_history(
    workflow: Workflow[Any, Any],
    history: Sequence[Event] | str | bytes | Path,
    *,
    instance_id: str = "replay",
) -> Decision:
    """Replay a recorded history against the current code of ``workflow``.

    Nothing new is applied: no inbox, and time stands at the run's start, so
    no timer fires (except zero-length ones). Use it in tests to check that a change to a workflow keeps
    the instances already running on the old code replayable.

    Args:
        workflow: the workflow as the code defines it now.
        history: the events of one run, or their JSON (text, bytes or a file
            path) as written by :func:`durable.dump_history`.
        instance_id: the instance id to replay as (only matters for child ids).

    Returns:
        The engine's decision (``status`` tells where the run stands).

    Raises:
        NonDeterminismError: the code yields something the history did not record,
            or stops yielding where the history goes on.
    """
    if isinstance(history, Path):
        events = load_history(history.read_bytes())
    elif isinstance(history, str | bytes):
        events = load_history(history)
    else:
        events = list(history)
    if not events or not isinstance(events[0], WorkflowStarted):
        raise ValueError("a history must begin with WorkflowStarted")
    decision = replay(workflow, events, [], events[0].timestamp, instance_id=instance_id)
    if decision.stuck is not None:
        raise decision.stuck
    return decision
