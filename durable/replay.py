"""The pure replay engine: ``(workflow, history, inbox, now) -> Decision``.

No I/O, no clock, no store: a driver loads an instance's history and inbox,
calls :func:`replay` with the time it wants the step to happen at, and
commits the returned :class:`Decision` atomically.

How a step works::

    history:  WorkflowStarted  ActivityScheduled#1  ActivityCompleted#1  TimerScheduled#2
              |-- replayed: the generator is re-run and fed recorded results --|
    inbox:    EventMessage(approval)                 -> EventRaised        (new)
    due:      timer #2 (fire_at <= now)              -> TimerFired#2       (new)
              the generator goes on and yields ctx.call(...) -> ActivityScheduled#3 (new)

Every command the workflow issues (activity, timer, event wait, child, side
effect, patch marker) takes the next *task id*. A command whose id the
history already recorded must match it (same kind, same activity, event or
workflow name), else the step ends with :class:`NonDeterminismError` and the
instance is kept STUCK with nothing written. Results are applied in history
order, so ``ctx.any`` picks the same winner on every replay.

New input is applied in time order: inbox messages by ``received_at`` and due
timers (sleeps, event-wait deadlines, retries) by due time, a timer first on
a tie. An external event goes to the oldest wait the workflow is blocked on;
with none, it is buffered for the next wait on that name (so a wait that lost
a ``ctx.any`` does not swallow it). At the end of a step the suspended
generator is closed with every command ignored, so ``finally`` blocks never
run later at garbage collection.

A driver may keep it instead: :func:`replay_live` also returns a
:class:`LiveRun`, and once the decision is committed, :func:`resume` goes on
from it with the next inbox, costing only the new events however long the
history is. Resuming decides exactly what replaying the history would (the
property tests run both side by side); the engine stays pure either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from durable.codec import ErrorInfo
from durable.decision import ActivityWork, ChildStart, Decision, OutgoingMessage
from durable.errors import (
    InvalidHistoryError,
)
from durable.execution import (
    FINAL_STATUS,
    MAX_NEW_EVENTS_PER_STEP,
    RUNAWAY_EVENTS,
    Execution,
    ReplayAborted,
)
from durable.history import (
    FINAL_EVENTS,
    ChildResult,
    Event,
    Message,
    Status,
    StatusSet,
    TerminateMessage,
    WorkflowCanceled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable.workflow import Workflow

__all__ = [
    "MAX_NEW_EVENTS_PER_STEP",
    "RUNAWAY_EVENTS",
    "ActivityWork",
    "ChildStart",
    "Decision",
    "InvalidHistoryError",
    "LiveRun",
    "OutgoingMessage",
    "replay",
    "replay_live",
    "resume",
]


def replay(
    workflow: Workflow[Any, Any],
    history: Sequence[Event],
    inbox: Sequence[Message],
    now: datetime,
    *,
    instance_id: str,
) -> Decision:
    """Replay ``history``, apply ``inbox`` and the timers due at ``now``; decide what is next.

    Pure: the result depends only on the arguments (and the workflow's code).
    A :class:`NonDeterminismError` is not raised but returned as a STUCK decision
    (``decision.stuck``) that writes nothing and consumes nothing; so is a
    runaway step (over ``RUNAWAY_EVENTS`` new events: ``InvalidHistoryError``).
    """
    decision, live = replay_live(workflow, history, inbox, now, instance_id=instance_id)
    if live is not None:
        live.close()
    return decision


class LiveRun:
    """A run's generator, kept suspended after a step so that the next one need not replay.

    It stands for the run *once the decision that produced it is committed*:
    :attr:`history` already includes that decision's events. A driver that
    could not commit (or does not know) must :meth:`close` it and replay.
    Resuming costs what the new input costs, however long the history is.
    """

    def __init__(self, execution: Execution, events: Sequence[Event], *, resumed: bool) -> None:
        self._execution: Execution | None = execution
        self.workflow: Workflow[Any, Any] = execution.workflow
        self.instance_id = execution.instance_id
        history = execution.history
        if resumed and isinstance(history, list):
            # The list of the run this one was resumed from (used up): grow it in place,
            # so that a step costs its new events, not a copy of the whole history.
            history.extend(events)
            self.history: list[Event] = history
        else:
            self.history = [*history, *events]  # the caller's sequence: never changed

    @property
    def run(self) -> int:
        """The run number (continue-as-new starts a new one)."""
        started = self.history[0]
        assert isinstance(started, WorkflowStarted)
        return started.run

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last event of :attr:`history`."""
        return self.history[-1].seq

    def take(self) -> Execution:
        """The suspended execution, handed out once (a live run cannot be resumed twice)."""
        execution, self._execution = self._execution, None
        if execution is None:
            raise RuntimeError(
                f"the live run of {self.instance_id!r} was already resumed or closed"
            )
        return execution

    def close(self) -> None:
        """Close the suspended generator (its ``finally`` blocks run, recording nothing)."""
        execution, self._execution = self._execution, None
        if execution is not None:
            execution.close()


def replay_live(
    workflow: Workflow[Any, Any],
    history: Sequence[Event],
    inbox: Sequence[Message],
    now: datetime,
    *,
    instance_id: str,
) -> tuple[Decision, LiveRun | None]:
    """:func:`replay`, also returning the run kept live for :func:`resume` while it goes on."""
    if not history or not isinstance(history[0], WorkflowStarted):
        raise InvalidHistoryError(f"history of {instance_id!r} must begin with WorkflowStarted")
    started = history[0]
    last = history[-1]
    if isinstance(last, FINAL_EVENTS):
        return _ended(workflow, history, inbox, now, instance_id), None
    terminate = next((m for m in inbox if isinstance(m, TerminateMessage)), None)
    if terminate is not None:
        return _terminated(started, history, inbox, now, instance_id, terminate.reason), None

    execution = Execution(workflow, history, now, instance_id)
    return _advance(execution, started, history, inbox, replay_first=True)


def resume(
    live: LiveRun, inbox: Sequence[Message], now: datetime
) -> tuple[Decision, LiveRun | None]:
    """Go on from ``live`` as :func:`replay_live` would from ``live.history``, without replaying.

    The decision is the one replaying ``live.history`` would give (the
    property tests check this); ``live`` is used up either way.
    """
    execution = live.take()
    history = live.history
    started = history[0]
    assert isinstance(started, WorkflowStarted)
    terminate = next((m for m in inbox if isinstance(m, TerminateMessage)), None)
    if terminate is not None:
        execution.close()
        return _terminated(started, history, inbox, now, live.instance_id, terminate.reason), None
    execution.continue_after(history, now)
    return _advance(execution, started, history, inbox, replay_first=False)


def _advance(
    execution: Execution,
    started: WorkflowStarted,
    history: Sequence[Event],
    inbox: Sequence[Message],
    *,
    replay_first: bool,
) -> tuple[Decision, LiveRun | None]:
    """Apply ``inbox`` (after replaying ``history`` if asked); the decision and the live run."""
    try:
        if replay_first:
            execution.replay_history()
        consumed, more = execution.process(inbox)
    except ReplayAborted:
        execution.close()
        return _stuck(execution, started, history), None
    except BaseException:
        execution.close()
        raise
    return _kept(execution, _decision(execution, started, consumed, more), not replay_first)


def _kept(
    execution: Execution, decision: Decision, resumed: bool
) -> tuple[Decision, LiveRun | None]:
    """The decision, and the run kept live if it goes on after it."""
    if execution.final is not None or decision.status != Status.RUNNING:
        execution.close()
        return decision, None
    return decision, LiveRun(execution, decision.events, resumed=resumed)


def _decision(
    execution: Execution, started: WorkflowStarted, consumed: list[str], more: bool
) -> Decision:
    final = execution.final
    decision = Decision(
        instance_id=execution.instance_id,
        run=execution.run,
        status=Status.RUNNING,
        at=execution.now,
        events=execution.new_events,
        consumed=consumed,
        custom_status=execution.custom_status,
        children=execution.child_starts,
        more=more,
    )
    if final is None:
        decision.dispatch = execution.dispatch
        decision.pending = execution.pending_work()
        decision.wake_at = execution.wake_at()
        decision.waiting_on = execution.waiting_on()
        decision.waits_on_others = execution.waits_on_others()
        return decision
    decision.status = FINAL_STATUS[type(final)]
    if isinstance(final, WorkflowCompleted):
        decision.output = final.result
    elif isinstance(final, (WorkflowFailed, WorkflowCanceled)):
        decision.error = final.error
    elif isinstance(final, WorkflowContinuedAsNew):
        decision.next_run = WorkflowStarted(
            workflow=started.workflow,
            input=final.input,
            run=execution.run + 1,
            parent_id=started.parent_id,
            parent_task_id=started.parent_task_id,
            parent_run=started.parent_run,
            seq=1,
            timestamp=execution.now,
        )
    if decision.next_run is None:
        decision.messages = _notify_parent(started, final, execution.instance_id, execution.now)
    return decision


def _notify_parent(
    started: WorkflowStarted, final: Event, instance_id: str, now: datetime
) -> list[OutgoingMessage]:
    if started.parent_id is None or started.parent_task_id is None:
        return []
    status = FINAL_STATUS[type(final)]
    result = final.result if isinstance(final, WorkflowCompleted) else None
    error = getattr(final, "error", None)
    if status != Status.COMPLETED and error is None:
        reason = getattr(final, "reason", "") or status.value.lower()
        error = ErrorInfo(type="durable.errors.ChildEnded", message=f"child {instance_id} {reason}")
    message = ChildResult(
        task_id=started.parent_task_id,
        run=started.parent_run or 1,
        child_id=instance_id,
        status=status,
        result=result,
        error=error,
        # Stamped with the step's time, not the wall clock: the parent orders it
        # against its timers by this, and a virtual clock may be far ahead.
        received_at=now,
    )
    return [OutgoingMessage(started.parent_id, message)]


def _stuck(execution: Execution, started: WorkflowStarted, history: Sequence[Event]) -> Decision:
    """Non-determinism, or a runaway step: kept STUCK with the error, nothing written."""
    error = execution.nde or execution.runaway
    assert error is not None
    return Decision(
        instance_id=execution.instance_id,
        run=started.run,
        status=Status.STUCK,
        at=execution.now,
        error=ErrorInfo.from_exception(error),
        custom_status=_last_status(history),
        stuck=execution.nde,
    )


def _ended(
    workflow: Workflow[Any, Any],
    history: Sequence[Event],
    inbox: Sequence[Message],
    now: datetime,
    instance_id: str,
) -> Decision:
    """A run that already ended: check the code still agrees, consume whatever arrived late."""
    started = history[0]
    assert isinstance(started, WorkflowStarted)
    final = history[-1]
    if not isinstance(final, WorkflowTerminated):  # termination ran no code: nothing to check
        execution = Execution(workflow, history, now, instance_id)
        try:
            execution.replay_history()
        except ReplayAborted:
            return _stuck(execution, started, history)
        finally:
            execution.close()
    decision = Decision(
        instance_id=instance_id,
        run=started.run,
        status=FINAL_STATUS[type(final)],
        at=now,
        consumed=[m.id for m in inbox],
        custom_status=_last_status(history),
    )
    if isinstance(final, WorkflowCompleted):
        decision.output = final.result
    elif isinstance(final, WorkflowFailed | WorkflowCanceled):
        decision.error = final.error
    return decision


def _terminated(
    started: WorkflowStarted,
    history: Sequence[Event],
    inbox: Sequence[Message],
    now: datetime,
    instance_id: str,
    reason: str,
) -> Decision:
    event = WorkflowTerminated(reason=reason, seq=history[-1].seq + 1, timestamp=now)
    return Decision(
        instance_id=instance_id,
        run=started.run,
        status=Status.TERMINATED,
        at=now,
        events=[event],
        consumed=[m.id for m in inbox],
        custom_status=_last_status(history),
        messages=_notify_parent(started, event, instance_id, now),
    )


def _last_status(history: Sequence[Event]) -> Any:
    for event in reversed(history):
        if isinstance(event, StatusSet):
            return event.value
    return None
