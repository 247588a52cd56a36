"""One replay of one run of a workflow: the engine's working part (pure, no I/O).

:class:`Execution` re-runs the workflow generator, feeds it recorded
results in history order, matches every command it issues against the
recorded one, then turns new input (inbox messages, due timers) into new
events. :func:`durable.replay.replay` wraps it and builds the
:class:`~durable.decision.Decision`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from durable.codec import ErrorInfo, decode, encode, encode_arguments
from durable.decision import ActivityWork, ChildStart
from durable.errors import (
    Cancelled,
    DurableError,
    InvalidHistoryError,
    NonDeterminismError,
    SerializationError,
)
from durable.errors import WorkflowFailed as WorkflowFailedError
from durable.history import (
    FINAL_EVENTS,
    ActivityCompleted,
    ActivityFailed,
    ActivityRedispatched,
    ActivityResult,
    ActivityRetryScheduled,
    ActivityScheduled,
    AttemptLost,
    CancelMessage,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildResult,
    ChildScheduled,
    CommandEvent,
    Event,
    EventMessage,
    EventRaised,
    EventWaitStarted,
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
from durable.retry import NO_RETRY, RetryPolicy
from durable.tasks import (
    ActivityTask,
    AllTask,
    AnyTask,
    ChildTask,
    ContinueAsNew,
    EventTask,
    Task,
    TimerTask,
)
from durable.workflow import Context, Workflow

MAX_NEW_EVENTS_PER_STEP = 2000
"""Past this many new events, a step stops taking messages and timers and asks to be called again."""

RUNAWAY_EVENTS = 200_000
"""More new events than this in one step can only be a runaway loop; the step refuses to go on."""


class ReplayAborted(BaseException):
    """Unwinds workflow code after non-determinism; BaseException so user code can't catch it."""


@dataclass
class _ActivityState:
    task: ActivityTask[Any]
    scheduled: ActivityScheduled
    scheduled_at: datetime
    """When the current attempt's ``ActivityScheduled`` was recorded."""
    attempt: int = 1
    dispatched_at: datetime | None = None
    """When the current attempt was last dispatched again (``ActivityRedispatched``)."""
    dispatches: int = 1
    """How many times the current attempt was dispatched, counting the first."""
    retry_at: datetime | None = None


FINAL_STATUS: dict[type, Status] = {
    WorkflowCompleted: Status.COMPLETED,
    WorkflowFailed: Status.FAILED,
    WorkflowCanceled: Status.CANCELED,
    WorkflowTerminated: Status.TERMINATED,
    WorkflowContinuedAsNew: Status.RUNNING,
}


class Execution:
    """One replay of one run: implements the Context's hooks and applies events."""

    def __init__(
        self,
        workflow: Workflow[Any, Any],
        history: Sequence[Event],
        now: datetime,
        instance_id: str,
    ) -> None:
        if not history or not isinstance(history[0], WorkflowStarted):
            raise InvalidHistoryError(f"history of {instance_id!r} must begin with WorkflowStarted")
        self.workflow = workflow
        self.history = history
        self.now = now
        self.instance_id = instance_id
        self.started: WorkflowStarted = history[0]
        self.run = self.started.run
        self.next_seq = history[-1].seq + 1

        self.recorded: dict[int, CommandEvent] = {}
        for event in history:
            if isinstance(event, CommandEvent) and getattr(event, "attempt", 1) == 1:
                self.recorded[event.task_id] = event
        self.max_recorded = max(self.recorded, default=0)
        self.next_id = 1
        self.issued: dict[int, Any] = {}
        self.patches: dict[str, bool] = {}

        self.cursor = 0
        self.in_history = True
        self.order = 0
        self.gen: Generator[Any, Any, Any] | None = None
        self.blocked_on: Task[Any] | None = None
        self.code_final: Event | None = None
        self.final: Event | None = None
        self.cancel_thrown = False
        self.nde: NonDeterminismError | None = None
        self.runaway: InvalidHistoryError | None = None
        """Set when the code produced over RUNAWAY_EVENTS events in one step."""
        self.first_new_id: int | None = None
        """The first command the code issued that the history lacks, while still replaying it."""
        self.closing = False
        """True while the suspended generator is closed at the end of a step (see close())."""

        self.activities: dict[int, _ActivityState] = {}
        self.timers: dict[int, tuple[TimerTask, datetime]] = {}
        self.wait_deadlines: dict[int, tuple[EventTask, datetime]] = {}
        self.waits: dict[str, deque[EventTask]] = {}
        self.buffered: dict[str, deque[Any]] = {}
        self.children: dict[int, ChildTask[Any]] = {}
        self.child_ids: dict[int, str] = {}
        self.custom_status: Any = None
        self.failures = 0
        """Tasks settled with an error so far (see ``_evaluate``)."""

        self.new_events: list[Event] = []
        self.dispatch: list[ActivityWork] = []
        self.child_starts: list[ChildStart] = []
        self.ctx = Context(
            self,
            instance_id=instance_id,
            input=None,
            workflow=workflow,
        )

    @property
    def aborted(self) -> bool:
        """Whether the replay is being unwound (non-determinism or a runaway step)."""
        return self.nde is not None or self.runaway is not None

    # ------------------------------------------------------------------ hooks (Context)

    @property
    def is_replaying(self) -> bool:
        # Code run while recorded events are applied already ran in the step that
        # recorded them (a step applies every event it appends, the last one too),
        # except on a first step and once the code issues a command the history lacks.
        if self.closing:
            return True
        return self.in_history and len(self.history) > 1 and self.first_new_id is None

    def side_effect(self, effect: str) -> Any:
        if self.closing:
            return self._derive(effect, self.next_id)
        tid, rec = self._issue(f"side effect {effect}()", lambda r: _is_effect(r, effect))
        if rec is not None:
            assert isinstance(rec, SideEffectRecorded)
            return rec.value
        value = self._derive(effect, tid)
        self._append(SideEffectRecorded(task_id=tid, effect=effect, value=value))  # type: ignore[arg-type]
        return value

    def set_status(self, value: Any) -> None:
        encoded = encode(value, what="custom status")
        if self.closing or self.is_replaying or encoded == self.custom_status:
            return
        self._append(StatusSet(value=encoded))
        self.custom_status = encoded

    def patched(self, patch_id: str) -> bool:
        if patch_id in self.patches or self.closing:
            return self.patches.get(patch_id, False)
        # Markers are recorded in the order the code asked; markers before this
        # one that the code no longer asks for belong to retired patches.
        tid = self.next_id
        while isinstance(marker := self.recorded.get(tid), PatchMarker):
            if marker.patch_id == patch_id:
                for retired in range(self.next_id, tid):
                    self.issued[retired] = "retired patch"
                self.next_id = tid
                break
            tid += 1
        rec = self.recorded.get(self.next_id)
        if isinstance(rec, PatchMarker) and rec.patch_id == patch_id:
            result = True
        elif rec is None and self.next_id > self.max_recorded:
            result = True
            self._append(PatchMarker(task_id=self.next_id, patch_id=patch_id))
        else:
            result = False
        if result:
            self.issued[self.next_id] = f"patch {patch_id}"
            self.next_id += 1
        self.patches[patch_id] = result
        return result

    def _derive(self, effect: str, task_id: int) -> Any:
        if effect == "now":
            return self.now.isoformat()
        seed = f"{self.instance_id}|{self.run}|{self.started.timestamp.isoformat()}|{task_id}"
        digest = hashlib.sha256(seed.encode()).digest()
        if effect == "uuid":
            return str(uuid.UUID(bytes=digest[:16], version=4))
        return int.from_bytes(digest[:8], "big")

    # ------------------------------------------------------------------ issuing commands

    def _issue(
        self, command: Task[Any] | str, matches: Callable[[CommandEvent], bool]
    ) -> tuple[int, CommandEvent | None]:
        """Give the next task id to a command (a task, or a side effect's description).

        Returns the id and the event the history recorded for it, if any; the
        command is registered as issued under that id.
        """
        yielded = command.describe() if isinstance(command, Task) else command
        while isinstance(self.recorded.get(self.next_id), PatchMarker):
            # A marker the code no longer asks for (a retired patch): step over it.
            self.issued[self.next_id] = "retired patch"
            self.next_id += 1
        tid = self.next_id
        self.next_id += 1
        rec = self.recorded.get(tid)
        if rec is None and tid <= self.max_recorded:
            self._fail_nondeterminism(tid, None, yielded)
        if rec is not None and not matches(rec):
            self._fail_nondeterminism(tid, _describe_recorded(rec), yielded)
        self.issued[tid] = command
        if isinstance(command, Task):
            command.task_id = tid
        return tid, rec

    def _fail_nondeterminism(
        self, position: int, recorded: str | None, yielded: str | None
    ) -> None:
        self.nde = NonDeterminismError(self.instance_id, position, recorded, yielded)
        raise ReplayAborted()

    def _schedule(self, task: Task[Any]) -> None:
        if isinstance(task, AllTask | AnyTask):
            for sub in task.tasks:
                self._schedule(sub)
            return
        if task.task_id is not None:
            return
        if isinstance(task, ActivityTask):
            self._schedule_activity(task)
        elif isinstance(task, TimerTask):
            self._schedule_timer(task)
        elif isinstance(task, EventTask):
            self._schedule_wait(task)
        elif isinstance(task, ChildTask):
            self._schedule_child(task)
        else:  # pragma: no cover - every Task subclass is handled above
            raise TypeError(f"unknown task type {type(task).__name__}")

    def _schedule_activity(self, task: ActivityTask[Any]) -> None:
        act = task.activity
        # Encoded before taking an id, on replay too: arguments the codec cannot
        # carry raise at the yield and issue nothing, the same way every time.
        what = f"activity {act.name!r}"
        payload = encode_arguments(act.fn, task.args, task.kwargs, act.codec, what=what)
        tid, rec = self._issue(
            task, lambda r: isinstance(r, ActivityScheduled) and r.activity == act.name
        )
        if isinstance(rec, ActivityScheduled):
            self.activities[tid] = _ActivityState(task, rec, rec.timestamp)
        else:
            timeout = task.timeout if task.timeout is not None else act.timeout
            scheduled = ActivityScheduled(
                task_id=tid,
                activity=act.name,
                input=payload,
                name=task.name,
                timeout=timeout.total_seconds() if timeout is not None else None,
            )
            self._append(scheduled)
            state = self.activities[tid] = _ActivityState(task, scheduled, self.now)
            self.dispatch.append(self._work(state))

    def _schedule_timer(self, task: TimerTask) -> None:
        tid, rec = self._issue(task, lambda r: isinstance(r, TimerScheduled))
        if isinstance(rec, TimerScheduled):
            fire_at = rec.fire_at
        else:
            fire_at = task.until if task.until is not None else self.now + (task.delay or _ZERO)
            self._append(TimerScheduled(task_id=tid, fire_at=fire_at, name=task.name))
        self.timers[tid] = (task, fire_at)

    def _schedule_wait(self, task: EventTask) -> None:
        tid, rec = self._issue(
            task, lambda r: isinstance(r, EventWaitStarted) and r.event == task.event
        )
        if isinstance(rec, EventWaitStarted):
            deadline = rec.timeout_at
        else:
            deadline = self.now + task.timeout if task.timeout is not None else None
            self._append(
                EventWaitStarted(task_id=tid, event=task.event, timeout_at=deadline, name=task.name)
            )
        self.waits.setdefault(task.event, deque()).append(task)
        if deadline is not None:
            self.wait_deadlines[tid] = (task, deadline)

    def _take_buffered(self, task: Task[Any]) -> None:
        """Hand buffered events to the waits in ``task``, which the workflow now awaits."""
        for leaf in _leaves(task):
            if isinstance(leaf, EventTask) and not leaf.done:
                buffered = self.buffered.get(leaf.event)
                if buffered:
                    self._deliver(leaf, buffered.popleft())

    def _deliver(self, task: EventTask, data: Any) -> None:
        self.waits[task.event].remove(task)
        if task.task_id is not None:
            self.wait_deadlines.pop(task.task_id, None)
        self._settle(task, value=data)

    def _schedule_child(self, task: ChildTask[Any]) -> None:
        wf = task.workflow
        payload = encode(task.input, wf.codec, what=f"input of child workflow {wf.name!r}")
        tid, rec = self._issue(
            task, lambda r: isinstance(r, ChildScheduled) and r.workflow == wf.name
        )
        self.children[tid] = task
        if isinstance(rec, ChildScheduled):
            self.child_ids[tid] = rec.child_id
            return
        child_id = task.instance_id or f"{self.instance_id}:{self.run}:{tid}"
        self.child_ids[tid] = child_id
        self._append(
            ChildScheduled(
                task_id=tid, workflow=wf.name, input=payload, child_id=child_id, name=task.name
            )
        )
        started = WorkflowStarted(
            workflow=wf.name,
            input=payload,
            parent_id=self.instance_id,
            parent_task_id=tid,
            parent_run=self.run,
            seq=1,
            timestamp=self.now,
        )
        self.child_starts.append(ChildStart(child_id, started))

    def _work(self, state: _ActivityState) -> ActivityWork:
        scheduled = state.scheduled
        return ActivityWork(
            instance_id=self.instance_id,
            run=self.run,
            task_id=scheduled.task_id,
            attempt=state.attempt,
            activity=scheduled.activity,
            input=scheduled.input,
            timeout=scheduled.timeout,
            scheduled_at=state.scheduled_at,
            dispatched_at=state.dispatched_at or state.scheduled_at,
            dispatches=state.dispatches,
            fn=state.task.activity,
        )

    # ------------------------------------------------------------------ driving the generator

    def start(self) -> None:
        try:
            workflow_input = decode(
                self.started.input,
                self.workflow.input_type,
                what=f"input of workflow {self.workflow.name!r}",
            )
        except DurableError as exc:
            self._finish(WorkflowFailed(error=ErrorInfo.from_exception(exc)))
            return
        self.ctx.input = workflow_input
        try:
            result = self.workflow(self.ctx, workflow_input)
        except ReplayAborted:
            raise
        except ContinueAsNew as restart:
            self._finish_returned(restart)
            return
        except Cancelled as exc:
            self._finish(WorkflowCanceled(reason=exc.reason, error=ErrorInfo.from_exception(exc)))
            return
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # sys.exit() included: the workflow failed, it did not stop us
            self._finish(WorkflowFailed(error=ErrorInfo.from_exception(exc)))
            return
        if isinstance(result, Generator):
            self.gen = result
            self._drive()
        else:
            self._finish_returned(result)

    def _drive(self, value: Any = None, error: BaseException | None = None) -> None:
        gen = self.gen
        assert gen is not None
        while True:
            try:
                yielded = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                self._finish_returned(stop.value)
                return
            except ReplayAborted:
                raise
            except ContinueAsNew as restart:
                if self.aborted:
                    raise ReplayAborted() from None
                self._finish_returned(restart)
                return
            except Cancelled as exc:
                if self.aborted:
                    raise ReplayAborted() from None
                self._finish(
                    WorkflowCanceled(reason=exc.reason, error=ErrorInfo.from_exception(exc))
                )
                return
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # sys.exit() included, as in start()
                if self.aborted:
                    raise ReplayAborted() from None
                self._finish(WorkflowFailed(error=ErrorInfo.from_exception(exc)))
                return
            if self.aborted:
                raise ReplayAborted()
            value, error = None, None
            if isinstance(yielded, ContinueAsNew):
                self.close()
                self._finish_returned(yielded)
                return
            if not isinstance(yielded, Task):
                error = TypeError(
                    f"workflow {self.workflow.name!r} yielded {yielded!r}, which is not a task; "
                    "yield what ctx.call, ctx.sleep, ctx.wait_for_event, ctx.all, ctx.any "
                    "or ctx.child return"
                )
                continue
            try:
                self._schedule(yielded)
            except SerializationError as exc:
                error = exc  # arguments the codec cannot carry: raised at the yield
                continue
            self._take_buffered(yielded)
            if self._evaluate(yielded):
                if yielded.failed:
                    error = yielded.exception
                else:
                    value = yielded._value
                continue
            self.blocked_on = yielded
            return

    def _evaluate(self, task: Task[Any]) -> bool:
        """Whether ``task`` is done; settles composite tasks whose parts are."""
        if task.done:
            return True
        if isinstance(task, AllTask):
            tasks = task.tasks
            done = task._done_prefix
            while done < len(tasks) and self._evaluate(tasks[done]) and not tasks[done].failed:
                done += 1
            task._done_prefix = done
            # The rest is searched for a failure only when one happened since the last search
            # (a failure anywhere below starts with a failed task being settled).
            if done < len(tasks) and task._failures_seen != self.failures:
                task._failures_seen = self.failures
                failed = [t for t in tasks[done:] if self._evaluate(t) and t.failed]
                if failed:
                    first = min(failed, key=_finish_order)
                    self._settle(task, error=first.exception, order=_finish_order(first))
            elif done == len(tasks):
                last = max((_finish_order(t) for t in tasks), default=self.order)
                self._settle(task, value=[t._value for t in tasks], order=last)
            return task.done
        if isinstance(task, AnyTask):
            finished = [t for t in task.tasks if self._evaluate(t)]
            if finished:
                first = min(finished, key=_finish_order)
                self._settle(task, value=first, order=_finish_order(first))
            return task.done
        return False

    def _settle(
        self,
        task: Task[Any],
        *,
        value: Any = None,
        error: BaseException | None = None,
        order: int | None = None,
    ) -> None:
        if order is None:
            self.order += 1
            order = self.order
        if error is not None:
            self.failures += 1
            task._reject(error, order)
        else:
            task._resolve(value, order)

    def _wake(self) -> None:
        """Resume the generator if what it waits on has finished."""
        blocked = self.blocked_on
        if blocked is None or not self._evaluate(blocked):
            return
        self.blocked_on = None
        if blocked.failed:
            self._drive(error=blocked.exception)
        else:
            self._drive(value=blocked._value)

    def _finish_returned(self, result: Any) -> None:
        try:
            if isinstance(result, ContinueAsNew):
                what = "continue-as-new input"
                payload = encode(result.input, self.workflow.codec, what=what)
                self._finish(WorkflowContinuedAsNew(input=payload))
                return
            what = f"result of {self.workflow.name!r}"
            payload = encode(result, self.workflow.codec, what=what)
        except SerializationError as exc:
            self._finish(WorkflowFailed(error=ErrorInfo.from_exception(exc)))
            return
        self._finish(WorkflowCompleted(result=payload))

    def continue_after(self, history: Sequence[Event], now: datetime) -> None:
        """Ready a live run for its next step, once the previous step's events are committed.

        ``history`` is the run's history so far, those events included. Every
        new event was applied as it was appended, so the state is what
        replaying ``history`` would rebuild; only what one step collects is reset.
        """
        self.history = history
        self.now = now
        self.new_events = []
        self.dispatch = []
        self.child_starts = []

    def close(self) -> None:
        """Close the generator a step leaves suspended at a ``yield``, recording nothing.

        Left to the garbage collector, closing would run the workflow's
        ``finally`` blocks at some later time against this finished step, and
        print "generator ignored GeneratorExit" for a ``finally`` that yields a
        cleanup call. Here it happens at once, with every command ignored.
        """
        gen, self.gen = self.gen, None
        if gen is None:
            return
        self.closing = True
        try:
            gen.close()
        except (Exception, Cancelled):  # a finally that yields or raises: nothing to record
            pass
        finally:
            self.closing = False

    def _finish(self, event: Event) -> None:
        self.gen = None
        self.blocked_on = None
        if self.in_history:
            self.code_final = event
        else:
            self._append(event)
            self.final = event

    # ------------------------------------------------------------------ applying events

    def _append(self, event: Event) -> Event:
        """Record ``event`` as the next new one (numbered and stamped with the step's time)."""
        if self.runaway is not None:
            raise ReplayAborted()  # code that caught the signal keeps trying: refuse again
        stamped = event.model_copy(update={"seq": self.next_seq, "timestamp": self.now})
        if self.in_history and self.first_new_id is None and isinstance(event, CommandEvent):
            self.first_new_id = event.task_id
        self.next_seq += 1
        self.new_events.append(stamped)
        if len(self.new_events) > RUNAWAY_EVENTS:
            # Unwound like non-determinism (user code cannot catch it): the step ends
            # STUCK with this error and writes none of the runaway events.
            self.runaway = InvalidHistoryError(
                f"workflow {self.workflow.name!r} produced over {RUNAWAY_EVENTS} events "
                "in one step without waiting on anything (a loop without a yield?)"
            )
            raise ReplayAborted()
        return stamped

    def replay_history(self) -> None:
        for index, event in enumerate(self.history):
            self.cursor = index
            if self.final is not None:
                raise InvalidHistoryError(
                    f"history of {self.instance_id!r} has {event.kind} #{event.seq} after its end"
                )
            if index == 0:
                self.start()
            else:
                self._apply_recorded(event)
        self.in_history = False
        if self.final is None and self.code_final is not None:
            self._append(self.code_final)
            self.final = self.code_final

    def _apply_recorded(self, event: Event) -> None:
        if isinstance(event, FINAL_EVENTS):
            code = self.code_final
            if code is None or code.kind != event.kind:
                yielded = code.kind if code is not None else self._describe_waiting()
                self._fail_nondeterminism(self._divergence(), event.kind, yielded)
            self.final = event
            return
        if isinstance(event, CommandEvent) and getattr(event, "attempt", 1) == 1:
            if event.task_id not in self.issued and not isinstance(event, PatchMarker):
                yielded = self.code_final.kind if self.code_final else self._describe_waiting()
                self._fail_nondeterminism(event.task_id, _describe_recorded(event), yielded)
            return
        self._apply(event)

    def _divergence(self) -> int:
        """Where the code parts from a history that recorded the run's end."""
        if self.first_new_id is not None:
            return self.first_new_id  # the first command the history does not have
        blocked = self.blocked_on
        if blocked is not None and blocked.task_id is not None:
            return blocked.task_id  # the code still waits on a recorded command
        return self.next_id

    def _apply(self, event: Event) -> None:
        """Apply a result-like event (recorded or new) to the running workflow."""
        if self.gen is None and not isinstance(event, StatusSet | ActivityScheduled):
            return  # the workflow has ended; late results change nothing
        handler = getattr(self, f"_apply_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _apply_ActivityScheduled(self, event: ActivityScheduled) -> None:
        state = self.activities.get(event.task_id)
        if state is not None:
            state.attempt = event.attempt
            state.scheduled_at = event.timestamp
            state.dispatched_at = None
            state.dispatches = 1
            state.retry_at = None

    def _apply_ActivityRedispatched(self, event: ActivityRedispatched) -> None:
        state = self.activities.get(event.task_id)
        if state is not None and state.attempt == event.attempt:
            state.dispatched_at = event.timestamp
            state.dispatches += 1

    def _apply_ActivityRetryScheduled(self, event: ActivityRetryScheduled) -> None:
        state = self.activities.get(event.task_id)
        if state is not None:
            state.retry_at = event.fire_at

    def _apply_ActivityCompleted(self, event: ActivityCompleted) -> None:
        state = self.activities.pop(event.task_id, None)
        if state is None:
            return
        act = state.task.activity
        try:
            value = decode(event.result, act.result_type, what=f"result of activity {act.name!r}")
        except DurableError as exc:
            self._settle(state.task, error=exc)
        else:
            self._settle(state.task, value=value)
        self._wake()

    def _apply_ActivityFailed(self, event: ActivityFailed) -> None:
        state = self.activities.pop(event.task_id, None)
        if state is not None:
            self._settle(state.task, error=event.error.to_exception())
            self._wake()

    def _apply_TimerFired(self, event: TimerFired) -> None:
        timer = self.timers.pop(event.task_id, None)
        if timer is not None:
            self._settle(timer[0], value=None)
            self._wake()
            return
        wait = self.wait_deadlines.pop(event.task_id, None)
        if wait is not None and not wait[0].done:
            task = wait[0]
            self.waits[task.event].remove(task)
            self._settle(task, error=TimeoutError(f"no event {task.event!r} arrived in time"))
            self._wake()

    def _apply_EventRaised(self, event: EventRaised) -> None:
        # An event goes to the oldest wait the workflow is blocked on. A wait it no
        # longer awaits (one that lost a ctx.any) does not swallow it: the event is
        # buffered for the next wait, which may be that same task yielded again.
        awaited = set(_leaves(self.blocked_on)) if self.blocked_on is not None else set()
        task = next((t for t in self.waits.get(event.event, ()) if t in awaited), None)
        if task is None:
            self.buffered.setdefault(event.event, deque()).append(event.data)
            return
        self._deliver(task, event.data)
        self._wake()

    def _apply_ChildCompleted(self, event: ChildCompleted) -> None:
        task = self.children.pop(event.task_id, None)
        if task is None:
            return
        wf = task.workflow
        try:
            value = decode(event.result, wf.result_type, what=f"result of child {wf.name!r}")
        except DurableError as exc:
            self._settle(task, error=exc)
        else:
            self._settle(task, value=value)
        self._wake()

    def _apply_ChildFailed(self, event: ChildFailed) -> None:
        task = self.children.pop(event.task_id, None)
        if task is None:
            return
        error = event.error.to_exception()
        if event.status != Status.FAILED:
            # Cancelled or terminated from outside: the parent gets an ordinary error,
            # never the child's ``Cancelled``, which would cancel the parent itself.
            cause = error if isinstance(error, Cancelled) else None
            child_id = self.child_ids.get(event.task_id, "?")
            error = WorkflowFailedError(child_id, event.status.value, cause)
        self._settle(task, error=error)
        self._wake()

    def _apply_StatusSet(self, event: StatusSet) -> None:
        self.custom_status = event.value

    def _apply_CancelRequested(self, event: CancelRequested) -> None:
        if self.cancel_thrown or self.gen is None:
            return
        self.cancel_thrown = True
        self.blocked_on = None
        self._drive(error=Cancelled(event.reason))

    # ------------------------------------------------------------------ new input

    def process(self, inbox: Sequence[Message]) -> tuple[list[str], bool]:
        """Turn inbox messages and due timers into new events; return (consumed ids, more)."""
        consumed: list[str] = []
        queue = deque(sorted(inbox, key=lambda m: m.received_at))
        while self.final is None:
            if len(self.new_events) >= MAX_NEW_EVENTS_PER_STEP:
                return consumed, True
            due = self._next_due()
            # On a tie the timer goes first: a timer a message made due at once (a
            # zero-delay retry or sleep) then fires before the next message whether
            # or not that message arrived in the same step, so how messages are
            # batched into steps does not change the history.
            if queue and (due is None or queue[0].received_at < due[0]):
                message = queue.popleft()
                consumed.append(message.id)
                self._receive(message)
            elif due is not None:
                due[1]()
            else:
                break
        return consumed, False

    def _next_due(self) -> tuple[datetime, Callable[[], None]] | None:
        best: tuple[datetime, int, Callable[[], None]] | None = None
        for tid, (_, fire_at) in self.timers.items():
            if fire_at <= self.now and (best is None or (fire_at, tid) < best[:2]):
                best = (fire_at, tid, self._fire(tid))
        for tid, (_, deadline) in self.wait_deadlines.items():
            if deadline <= self.now and (best is None or (deadline, tid) < best[:2]):
                best = (deadline, tid, self._fire(tid))
        for tid, state in self.activities.items():
            at = state.retry_at
            if at is not None and at <= self.now and (best is None or (at, tid) < best[:2]):
                best = (at, tid, self._retry(state))
        return (best[0], best[2]) if best is not None else None

    def _fire(self, task_id: int) -> Callable[[], None]:
        def fire() -> None:
            event = TimerFired(task_id=task_id)
            self._append(event)
            self._apply(event)

        return fire

    def _retry(self, state: _ActivityState) -> Callable[[], None]:
        def retry() -> None:
            event = state.scheduled.model_copy(update={"attempt": state.attempt + 1})
            self._apply(self._append(event))
            self.dispatch.append(self._work(state))

        return retry

    def _receive(self, message: Message) -> None:
        event: Event | None = None
        if isinstance(message, ActivityResult):
            event = self._activity_outcome(message)
        elif isinstance(message, AttemptLost):
            if self._in_flight(message.task_id, message.run, message.attempt) is not None:
                event = ActivityRedispatched(task_id=message.task_id, attempt=message.attempt)
        elif isinstance(message, EventMessage):
            event = EventRaised(event=message.event, data=message.data)
        elif isinstance(message, ChildResult):
            if message.run == self.run and message.task_id in self.children:
                if message.status == Status.COMPLETED:
                    event = ChildCompleted(task_id=message.task_id, result=message.result)
                else:
                    error = message.error or ErrorInfo(type="ChildFailed", message=message.status)
                    event = ChildFailed(task_id=message.task_id, status=message.status, error=error)
        elif isinstance(message, CancelMessage) and not self.cancel_thrown:
            event = CancelRequested(reason=message.reason)
        if event is not None:
            self._apply(self._append(event))  # stamped: a handler may read its time

    def _in_flight(self, task_id: int, run: int, attempt: int) -> _ActivityState | None:
        """The activity's state if that attempt is the one running now (not answered, not
        waiting to retry), else None."""
        state = self.activities.get(task_id)
        stale = state is None or state.attempt != attempt or state.retry_at is not None
        return None if stale or run != self.run else state

    def _activity_outcome(self, message: ActivityResult) -> Event | None:
        state = self._in_flight(message.task_id, message.run, message.attempt)
        if state is None:
            return None  # stale or duplicate delivery: the attempt already has its outcome
        if message.error is None:
            return ActivityCompleted(
                task_id=message.task_id, attempt=message.attempt, result=message.result
            )
        policy = self._policy(state.task)
        if policy.allows_retry(message.attempt, message.error.types or [message.error.type]):
            key = f"{self.instance_id}:{self.run}:{message.task_id}"
            fire_at = message.received_at + policy.delay(message.attempt, jitter_key=key)
            return ActivityRetryScheduled(
                task_id=message.task_id,
                attempt=message.attempt,
                fire_at=fire_at,
                error=message.error,
            )
        return ActivityFailed(task_id=message.task_id, attempt=message.attempt, error=message.error)

    def _policy(self, task: ActivityTask[Any]) -> RetryPolicy:
        return task.retry or task.activity.retry or self.workflow.retry or NO_RETRY

    # ------------------------------------------------------------------ results

    def _describe_waiting(self) -> str | None:
        if self.blocked_on is None:
            return None
        return f"a wait on {self.blocked_on.describe()}"

    def pending_work(self) -> list[ActivityWork]:
        return [self._work(state) for state in self.activities.values() if state.retry_at is None]

    def wake_at(self) -> datetime | None:
        times = [at for _, at in self.timers.values()]
        times += [at for _, at in self.wait_deadlines.values()]
        times += [s.retry_at for s in self.activities.values() if s.retry_at is not None]
        return min(times, default=None)

    def waiting_on(self) -> list[str]:
        if self.blocked_on is None:
            return []
        return [_label(t) for t in _leaves(self.blocked_on) if not t.done]

    def waits_on_others(self) -> bool:
        if self.blocked_on is None:
            return False
        return any(
            isinstance(t, EventTask | ChildTask) for t in _leaves(self.blocked_on) if not t.done
        )


_ZERO = timedelta(0)


def _finish_order(task: Task[Any]) -> int:
    return task._finished_order if task._finished_order is not None else 1 << 62


def _leaves(task: Task[Any]) -> list[Task[Any]]:
    if isinstance(task, AllTask | AnyTask):
        return [leaf for sub in task.tasks for leaf in _leaves(sub)]
    return [task]


def _label(task: Task[Any]) -> str:
    return f"{task.name} ({task.describe()})" if task.name else task.describe()


def _is_effect(recorded: CommandEvent, effect: str) -> bool:
    return isinstance(recorded, SideEffectRecorded) and recorded.effect == effect


def _describe_recorded(event: CommandEvent) -> str:
    if isinstance(event, ActivityScheduled):
        return f"activity {event.activity!r}"
    if isinstance(event, TimerScheduled):
        return "a timer"
    if isinstance(event, EventWaitStarted):
        return f"event {event.event!r}"
    if isinstance(event, ChildScheduled):
        return f"child workflow {event.workflow!r}"
    if isinstance(event, SideEffectRecorded):
        return f"side effect {event.effect}()"
    return f"patch {event.patch_id!r}"
