"""The work of the loop's Lambdas, free of Lambda plumbing: orchestrate, run one attempt.

The orchestrator steps an instance as long as work is immediately available
(local activities in-process, other activities in the activity Lambda while
they answer quickly, continue-as-new, a step cut short) and then says what
the loop does next with a small :class:`LoopDecision`::

    next        how the orchestrator answers its task token (see aws.py)
    --------    -------------------------------------------------------------
    sleep       only timers: Wait wait_seconds, come back
    park        anything else (events, children, activities still running,
                timers alongside them, nothing at all): start the activities
                listed, leave the token for whoever posts next; the task
                times out after wait_seconds (the next timer, or a week);
                woken with several attempts out, wait FAN_IN_SECONDS first
    continue    come back at once (the Lambda's time ran low)
    hand_over   this execution's history is long enough: start a successor, end
    succeed     the instance completed      fail   it failed, was canceled or terminated

``events`` travels with the decision: the execution's estimated history
length (and time waited), which the orchestrator compares to the hand-over
threshold at the start of every iteration, so the comparison costs no state
transition of its own.

Only small references to activity attempts travel to the activity Lambda;
it reads the attempt from the history by reference.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from durable.codec import ErrorInfo
from durable.decision import ActivityWork, Decision
from durable.errors import DurableError, InstanceNotFoundError
from durable.history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityResult,
    ActivityRetryScheduled,
    ActivityScheduled,
    AttemptLost,
    ChildCompleted,
    ChildFailed,
    ChildScheduled,
    Event,
    InstanceStatus,
    Message,
    Status,
)
from durable.runtime.activity import failed_result, resolve_activity, run_activity
from durable.runtime.clock import Clock
from durable.runtime.step import LiveRuns, WorkflowResolver, step
from durable.store.base import HistoryStore

HAND_OVER_EVENTS = 20_000
"""Default hand-over threshold; Step Functions fails an execution at 25,000 history events."""
INLINE_MAX_ACTIVITIES = 64
"""The orchestrator invokes and waits for at most this many activities at once (a wave)."""
INLINE_SECONDS = 3.0
"""How long the orchestrator waits for activities it invoked (512 MB waiting 3 s costs about one
state transition); an attempt still running after that posts its own outcome."""
MAX_WAIT_SECONDS = 7 * 24 * 3600
"""The longest one Sleep or park lasts: then the loop looks at the instance once more."""
MAX_PARK_SECONDS = MAX_WAIT_SECONDS
EVENTS_PER_ITERATION = 20
"""About how many history events one iteration adds to the execution (an Orchestrate task,
a Sleep or TimerDue, and the second pass a park with a timer may take)."""
HAND_OVER_AGE_SECONDS = 300 * 24 * 3600
"""An execution this old hands over: a wait is at most a week, so it ends well inside Step
Functions' one-year limit."""
STUCK_RETRY_SECONDS = 3600
"""How often a STUCK instance (non-determinism, unknown workflow) is tried again."""
LOST_AFTER_SECONDS = 900 + 60
"""An attempt dispatched this long ago with no outcome is lost (default: Lambda's 15-minute
maximum plus a minute): a started activity Lambda either reports or dies within its timeout,
and an asynchronous invocation can be dropped after Lambda's own retries."""
FAN_IN_SECONDS = 1
"""A loop parked on several attempts waits this long once woken: the outcomes posted
meanwhile are taken by one step instead of waking one orchestration each."""
LOST_GIVE_UP_PERIODS = 3
"""An attempt dispatched this many times, still without outcome ``lost_after`` seconds after
the last, is recorded as failed (``ActivityCrashed``) instead of dispatched again: its
invocations keep dying. The workflow's retry policy decides what follows. A dispatch of an
attempt found lost (by this check, or by a recovery) is recorded (``ActivityRedispatched``)
before it is made; a recovery's dispatch of an attempt not lost yet is not, and does not
count towards this."""
TIME_MARGIN_SECONDS = 10.0
"""Hand back to the loop when less than this is left of the Lambda's time."""


class ActivityCrashed(DurableError):
    """An activity attempt died without reporting (Lambda timeout, out of memory, crash)."""


@dataclass(frozen=True)
class ActivityRef:
    """What travels through Step Functions for one attempt."""

    instance_id: str
    run: int
    task_id: int
    attempt: int

    @classmethod
    def of(cls, work: ActivityWork) -> ActivityRef:
        return cls(work.instance_id, work.run, work.task_id, work.attempt)

    @classmethod
    def parse(cls, event: dict[str, Any]) -> ActivityRef:
        """The reference in an activity invocation's event (raises ValueError naming it)."""
        try:
            return cls(
                instance_id=str(event["instance_id"]),
                run=int(event["run"]),
                task_id=int(event["task_id"]),
                attempt=int(event["attempt"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an activity reference: {event!r} ({exc})") from None


@dataclass
class LoopDecision:
    """The orchestrator's answer to the state machine (see the module docstring)."""

    next: str
    activities: list[ActivityRef] = field(default_factory=list)
    wait_seconds: int = 0
    recover: bool = False
    """Whether the next orchestrator call must dispatch every pending attempt again."""
    steps: int = 0
    local_attempts: int = 0
    events_before: int = 0
    """The execution's budget used before this iteration (see ``weight``)."""
    woken_wait: int = 0
    """For a park: how long the loop waits once a post wakes it, so that outcomes of
    attempts finishing together are taken by one step (``FAN_IN_SECONDS`` with several
    attempts out, else 0)."""

    @property
    def weight(self) -> int:
        """What the iteration this decision leads to adds to the execution's history.

        However long it waits: the one-year limit is kept by the execution's age
        (``HAND_OVER_AGE_SECONDS``), not by counting time as events.
        """
        return EVENTS_PER_ITERATION

    @property
    def events(self) -> int:
        """The budget used once the iteration this decision leads to is over."""
        return self.events_before + self.weight

    def output(self, *, wait_seconds: int = 0, timeout: int = MAX_PARK_SECONDS) -> dict[str, Any]:
        """The answer to the task token: the next iteration's ``$.decision``.

        ``wait_seconds`` is what the Sleep state waits; ``timeout`` bounds the
        next Orchestrate task (its Lambda and its park).
        """
        return {
            "events": self.events,
            "recover": self.recover,
            "failures": 0,
            "wait_seconds": wait_seconds,
            "timeout": timeout,
        }

    def as_payload(self) -> dict[str, Any]:
        """A summary for logs and tests."""
        return {
            "next": self.next,
            "activities": [asdict(ref) for ref in self.activities],
            "wait_seconds": self.wait_seconds,
            "events": self.events,
            "recover": self.recover,
        }


class Dispatcher(Protocol):
    """Runs activity attempts in the activity Lambda (see ``aws_dispatch``)."""

    def call(self, works: Sequence[ActivityWork], seconds: float) -> list[ActivityResult | None]:
        """Run ``works`` at once, waiting up to ``seconds`` for them.

        One entry per work, in order: its outcome (a crash is a failed
        outcome), or ``None`` when the attempt is still running; such an
        attempt posts its own outcome and wakes the loop.
        """
        ...


@dataclass
class Observer:
    """Hooks the Lambda layer uses for metrics and logs (all optional)."""

    on_step: Callable[[Decision, float], None] = lambda decision, ms: None
    on_local_attempt: Callable[[ActivityResult], None] = lambda result: None
    start_children: Callable[[Sequence[str]], None] = lambda ids: None


def orchestrate(
    store: HistoryStore,
    instance_id: str,
    *,
    resolve: WorkflowResolver,
    clock: Clock,
    time_left: Callable[[], float],
    recover: bool = False,
    events: int = 0,
    hand_over_events: int = HAND_OVER_EVENTS,
    lost_after: float = LOST_AFTER_SECONDS,
    observer: Observer | None = None,
    live_runs: LiveRuns | None = None,
    dispatcher: Dispatcher | None = None,
    inline_seconds: float = INLINE_SECONDS,
    started: datetime | None = None,
) -> LoopDecision:
    """Step ``instance_id`` while work is immediately available; say what the loop does next.

    Local activities run here. Other activities run in the activity Lambda
    through ``dispatcher``: invoked in waves of at most
    ``INLINE_MAX_ACTIVITIES``, each waited for up to ``inline_seconds``; what
    comes back in time is recorded like a local attempt, by the commit of the
    step that follows it (one checkpoint, never posted). Once an attempt
    outlasts a wait, the attempts not yet invoked (and every round, without a
    dispatcher) are listed in a ``park`` decision for the caller to start.
    With ``recover`` (the previous orchestrator failed, maybe after its commit)
    the attempts of the first step are all pending ones, not only new ones,
    and the executions of unfinished children are started again
    (idempotently). ``events`` is the execution's history length so far (an
    estimate) and ``started`` when the execution started: at
    ``hand_over_events``, or ``HAND_OVER_AGE_SECONDS`` after ``started``,
    nothing is stepped and the answer is ``hand_over`` (``recover`` carried
    over). An attempt dispatched ``lost_after`` seconds ago
    and still without outcome is dispatched again; a park waiting on attempts
    in flight times out by then. ``live_runs`` (kept by a warm Lambda between
    invocations) lets a step resume the workflow instead of replaying it.
    """
    if events >= hand_over_events or (
        started is not None and (clock.now() - started).total_seconds() >= HAND_OVER_AGE_SECONDS
    ):
        return LoopDecision("hand_over", recover=recover)
    outcomes: list[Message] = []  # attempts run, recorded by the next commit
    decision = _orchestrate(
        store,
        instance_id,
        resolve,
        clock,
        time_left,
        recover,
        lost_after,
        observer,
        live_runs,
        outcomes,
        dispatcher,
        inline_seconds,
    )
    for result in outcomes:  # not taken by a step (it was cut short, or STUCK): keep them
        if isinstance(result, ActivityResult):  # not an AttemptLost: no dispatch followed it
            store.post(instance_id, result)
    decision.events_before = events
    return decision


def _orchestrate(
    store: HistoryStore,
    instance_id: str,
    resolve: WorkflowResolver,
    clock: Clock,
    time_left: Callable[[], float],
    recover: bool,
    lost_after: float,
    observer: Observer | None,
    live_runs: LiveRuns | None,
    outcomes: list[Message],
    dispatcher: Dispatcher | None,
    inline_seconds: float,
) -> LoopDecision:
    obs = observer or Observer()
    remote: dict[ActivityRef, ActivityWork] = {}
    running: set[ActivityRef] = set()  # invoked here, still running: they post their outcome
    recovering = recover
    steps = local_runs = 0
    out_of_time = False
    waiting_pays = True  # until an attempt outlasts a wait: then the rest is started async
    while True:
        started = _monotonic()
        decision = step(
            store,
            instance_id,
            resolve,
            clock.now(),
            live_runs=live_runs,
            carried=outcomes,
        )
        steps += 1
        if decision is None:
            return _finished(store.get(instance_id), steps, local_runs)
        obs.on_step(decision, (_monotonic() - started) * 1000)
        children = [child.instance_id for child in decision.children]
        if recovering:
            children += _open_children(store.history(instance_id))
        if children:
            obs.start_children(children)
        work = decision.pending if recovering else decision.dispatch
        local: list[ActivityWork] = []
        others: list[ActivityWork] = []
        for item in work:
            (local if _is_local(item) else others).append(item)
        if recovering:
            # Attempts already lost are left to the lost-attempt check below, which records
            # that they are dispatched again (or gives up on them), as for any lost attempt.
            lost_now, _ = _lost_attempts(others, clock.now(), lost_after)
            lost_refs = {ActivityRef.of(item) for item in lost_now}
            others = [item for item in others if ActivityRef.of(item) not in lost_refs]
        recovering = False
        for item in others:
            remote.setdefault(ActivityRef.of(item), item)
        if decision.status.is_terminal:
            return _finished_status(decision.status, steps, local_runs)
        if decision.status == Status.STUCK:
            return LoopDecision(
                "sleep", wait_seconds=STUCK_RETRY_SECONDS, steps=steps, local_attempts=local_runs
            )
        if out_of_time:
            # What ran is committed; the next invocation starts the attempts that did not.
            return LoopDecision("continue", recover=True, steps=steps, local_attempts=local_runs)
        if not (local or decision.more or decision.next_run is not None):
            if dispatcher is not None and remote and waiting_pays:
                got, waiting_pays = _call_in_waves(
                    dispatcher, remote, running, inline_seconds, time_left
                )
                outcomes.extend(got)
                if got:
                    continue  # step again with what came back
            now = clock.now()
            in_flight = [
                w for w in decision.pending if ActivityRef.of(w) not in remote and not _is_local(w)
            ]
            deadline: datetime | None = None
            if in_flight:
                lost, deadline = _lost_attempts(in_flight, now, lost_after)
                lost = [item for item in lost if ActivityRef.of(item) not in running]
                for item in lost:
                    if item.dispatches >= LOST_GIVE_UP_PERIODS:
                        outcomes.append(failed_result(item, _never_answered(item, now), now))
                    else:
                        outcomes.append(_lost_note(item, now))
                        remote.setdefault(ActivityRef.of(item), item)
                if lost:
                    # Step again: a failure goes to the workflow's retry policy; a lost attempt
                    # is recorded (ActivityRedispatched) before it is dispatched again, so no
                    # later call finds it lost again until lost_after has passed once more.
                    continue
            if remote:  # started by the caller now: lost by then if still silent
                started_now = now + timedelta(seconds=lost_after)
                deadline = started_now if deadline is None else min(deadline, started_now)
            routed = _route(decision, list(remote), now, deadline, steps, local_runs)
            if routed.next == "park" and len(in_flight) + len(remote) > 1:
                routed.woken_wait = FAN_IN_SECONDS
            return routed
        if time_left() < TIME_MARGIN_SECONDS:
            # Anything scheduled but not yet run is in ``pending`` for the next call.
            return LoopDecision("continue", recover=True, steps=steps, local_attempts=local_runs)
        for item in local:
            if time_left() < TIME_MARGIN_SECONDS:
                out_of_time = True  # never start an attempt with no time to run it
                break
            result = run_attempt(item, clock, time_left() - TIME_MARGIN_SECONDS)
            outcomes.append(result)
            obs.on_local_attempt(result)
            local_runs += 1


def _call_in_waves(
    dispatcher: Dispatcher,
    remote: dict[ActivityRef, ActivityWork],
    running: set[ActivityRef],
    inline_seconds: float,
    time_left: Callable[[], float],
) -> tuple[list[ActivityResult], bool]:
    """Invoke ``remote``'s attempts and wait for them, ``INLINE_MAX_ACTIVITIES`` at a time.

    Takes from ``remote`` what was invoked (attempts still running go into
    ``running``: they post their outcome). Returns the outcomes that came
    back and whether waiting still pays: after a wave with an attempt still
    running, or with no time left to wait, the rest is left in ``remote`` for
    the caller to start asynchronously.
    """
    got: list[ActivityResult] = []
    while remote:
        seconds = min(inline_seconds, time_left() - TIME_MARGIN_SECONDS)
        if seconds <= 0:
            return got, False
        wave = list(itertools.islice(remote.values(), INLINE_MAX_ACTIVITIES))
        for work in wave:
            del remote[ActivityRef.of(work)]
        answers = dispatcher.call(wave, seconds)
        got.extend(answer for answer in answers if answer is not None)
        still = [ActivityRef.of(w) for w, a in zip(wave, answers, strict=True) if a is None]
        running.update(still)
        if still:
            return got, False
    return got, True


def _lost_attempts(
    in_flight: list[ActivityWork], now: datetime, lost_after: float
) -> tuple[list[ActivityWork], datetime | None]:
    """The attempts without outcome ``lost_after`` seconds after they were last dispatched,
    and when the next of the others will be.

    The engine gives every attempt when it was last dispatched (scheduled, or recorded
    as dispatched again), so no history is read for this.
    """
    lost: list[ActivityWork] = []
    deadlines: list[datetime] = []
    for work in in_flight:
        at = work.dispatched_at or work.scheduled_at
        if at is None:
            continue
        deadline = at + timedelta(seconds=lost_after)
        if deadline <= now:
            lost.append(work)
        else:
            deadlines.append(deadline)
    return lost, min(deadlines, default=None)


def _lost_note(work: ActivityWork, now: datetime) -> AttemptLost:
    return AttemptLost(task_id=work.task_id, run=work.run, attempt=work.attempt, received_at=now)


def _never_answered(work: ActivityWork, now: datetime) -> ActivityCrashed:
    since = (
        "" if work.scheduled_at is None else f" {(now - work.scheduled_at).total_seconds():.0f}s"
    )
    return ActivityCrashed(
        f"no outcome{since} after the attempt was scheduled, though it was dispatched "
        f"{work.dispatches} times: its invocations keep dying (longer than the activity "
        "Lambda's timeout? out of memory?) or are dropped"
    )


def _route(
    decision: Decision,
    remote: list[ActivityRef],
    now: datetime,
    lost_at: datetime | None,
    steps: int,
    local_runs: int,
) -> LoopDecision:
    wake = None if decision.wake_at is None else _seconds_until(decision.wake_at, now)
    # Attempts running (started by us or before) wake us with their results, or are looked
    # at again when they would be lost.
    lost = None if lost_at is None else _seconds_until(lost_at, now)
    if lost is not None:
        wake = lost if wake is None else min(wake, lost)
    if decision.waits_on_others or lost is not None or remote:
        seconds = wake if wake is not None else MAX_PARK_SECONDS
        return LoopDecision("park", remote, seconds, False, steps, local_runs)
    if wake is not None:
        return LoopDecision("sleep", [], wake, False, steps, local_runs)
    return LoopDecision("park", [], MAX_PARK_SECONDS, False, steps, local_runs)


ENDINGS = {
    "succeed": "durable.Succeeded",
    "fail": "durable.Failed",
    "hand_over": "durable.HandOver",
}
"""The errors the orchestrator fails its task with to end the loop (caught by the ASL)."""


class TaskAnswers(Protocol):
    """What the orchestrator can do with its Orchestrate task's token."""

    def succeed(self, output: dict[str, Any]) -> None:
        """``SendTaskSuccess``: ``output`` becomes the next ``$.decision``."""
        ...

    def fail(self, error: str, cause: str) -> None:
        """``SendTaskFailure``: one of ``ENDINGS`` ends the loop."""
        ...

    def start(self, refs: Sequence[ActivityRef]) -> None:
        """Invoke the activity Lambda asynchronously for each attempt."""
        ...

    def park(self, output: dict[str, Any]) -> bool:
        """Leave the token (answered with ``output``) for the next poster; False if mail waits."""
        ...

    def seconds_left(self) -> float | None:
        """Seconds until the task times out (None: unknown)."""
        ...


def answer_task(decision: LoopDecision, answers: TaskAnswers) -> str:
    """Answer the Orchestrate task as ``decision`` says; what was done.

    ``"mail"`` means nothing was answered: mail came in while parking, so the
    caller orchestrates again. ``"expired"``: the task timed out before it
    could park (the state machine has moved on), so nothing is left. ``"repark"``: the task would time out at the
    wrong time for the park's timer, so it is answered to go on into a fresh
    task whose timeout is right (which then parks).
    """
    ending = ENDINGS.get(decision.next)
    if ending is not None:
        answers.fail(ending, f"the loop ends: {decision.next}")
        return ending
    if decision.next == "continue":
        answers.succeed(decision.output())
        return "continue"
    if decision.next == "sleep":
        answers.succeed(decision.output(wait_seconds=decision.wait_seconds))
        return "sleep"
    if decision.next != "park":
        raise ValueError(f"unknown loop decision {decision.next!r}")
    if decision.activities:
        answers.start(decision.activities)
    left = answers.seconds_left()
    if left is not None and left <= 0:
        # The task timed out under this orchestrator: TimerDue has started the next one,
        # and a token left now would be dead (a post would wake nothing).
        return "expired"
    if left is None or not _fits(left, decision.wait_seconds):
        answers.succeed(decision.output(timeout=decision.wait_seconds))
        return "repark"
    woken = decision.output(wait_seconds=decision.woken_wait)
    return "park" if answers.park(woken) else "mail"


def orchestrate_and_answer(
    decide: Callable[[bool, int], LoopDecision],
    answers: TaskAnswers,
    *,
    recover: bool,
    events: int,
    time_left: Callable[[], float],
    on_answer: Callable[[LoopDecision, str], None] = lambda decision, done: None,
) -> tuple[LoopDecision, list[str]]:
    """One Orchestrate task's work: ``decide(recover, events)``, then answer the token.

    When mail came in while parking (``"mail"``), orchestrates again in the
    same invocation rather than through the state machine, unless time runs
    low: then the task is answered to go on (``"continue"``). An instance that
    no longer exists ends the loop. ``on_answer`` sees each decision and what
    :func:`answer_task` did with it. Returns the last decision and every
    answer, in order.
    """
    done_all: list[str] = []
    while True:
        try:
            decision = decide(recover, events)
        except InstanceNotFoundError:
            decision = LoopDecision("fail")
        try:
            done = answer_task(decision, answers)
        except InstanceNotFoundError:
            answers.fail(ENDINGS["fail"], "the instance was deleted")
            done = ENDINGS["fail"]
        on_answer(decision, done)
        done_all.append(done)
        if done != "mail":
            return decision, done_all
        recover, events = False, decision.events_before
        if time_left() < TIME_MARGIN_SECONDS:
            answers.succeed(LoopDecision("continue", events_before=events).output())
            done_all.append("continue")
            return decision, done_all


def _fits(left: float, wanted: int) -> bool:
    """Whether a task with ``left`` seconds to its timeout may park for a ``wanted``-second timer."""
    return abs(left - wanted) <= max(2.0, wanted * 0.02)


def _seconds_until(when: datetime, now: datetime) -> int:
    """Whole seconds to ``when``, rounded up so the timer is due on return; 1 to a week."""
    return min(MAX_WAIT_SECONDS, max(1, math.ceil((when - now).total_seconds())))


def _open_children(history: Sequence[Event]) -> list[str]:
    answered = {e.task_id for e in history if isinstance(e, ChildCompleted | ChildFailed)}
    return [
        e.child_id for e in history if isinstance(e, ChildScheduled) and e.task_id not in answered
    ]


def _finished(header: InstanceStatus | None, steps: int, local_runs: int) -> LoopDecision:
    if header is None:
        return LoopDecision("fail", steps=steps, local_attempts=local_runs)  # deleted meanwhile
    return _finished_status(header.status, steps, local_runs)


def _finished_status(status: Status, steps: int, local_runs: int) -> LoopDecision:
    next_ = "succeed" if status == Status.COMPLETED else "fail"
    return LoopDecision(next_, steps=steps, local_attempts=local_runs)


def _is_local(work: ActivityWork) -> bool:
    try:
        return resolve_activity(work).local
    except DurableError:
        return False  # unknown here: the activity Lambda reports it as a failed attempt


# ----------------------------------------------------------------------------- attempts


def run_attempt(work: ActivityWork, clock: Clock, limit: float | None) -> ActivityResult:
    """Run one attempt, failing it with ``TimeoutError`` after its timeout (or ``limit`` seconds).

    A timed-out attempt's thread is abandoned: Python cannot stop it, and the
    Lambda container is frozen or recycled after the handler returns.
    """
    timeouts = [t for t in (work.timeout, limit) if t is not None]
    if not timeouts:
        return run_activity(work, clock.now)
    seconds = max(0.0, min(timeouts))
    box: list[ActivityResult] = []
    thread = threading.Thread(
        target=lambda: box.append(run_activity(work, clock.now)),
        name=f"durable-activity-{work.task_id}",
        daemon=True,
    )
    thread.start()
    thread.join(seconds)
    if box:
        return box[0]
    error = TimeoutError(f"activity {work.activity!r} ran longer than {seconds:g}s")
    return failed_result(work, error, clock.now())


def attempt_from_history(history: Sequence[Event], ref: ActivityRef) -> ActivityWork | None:
    """The attempt ``ref`` names, or ``None`` if it already has an outcome (or never existed)."""
    scheduled: ActivityScheduled | None = None
    for event in history:
        if isinstance(event, ActivityScheduled) and event.task_id == ref.task_id:
            scheduled = event
        elif isinstance(event, ActivityCompleted | ActivityFailed) and event.task_id == ref.task_id:
            return None
        elif (
            isinstance(event, ActivityRetryScheduled)
            and event.task_id == ref.task_id
            and event.attempt >= ref.attempt
        ):
            return None  # this attempt failed already; a later one is (or will be) running
    if scheduled is None:
        return None
    return ActivityWork(
        instance_id=ref.instance_id,
        run=ref.run,
        task_id=ref.task_id,
        attempt=ref.attempt,
        activity=scheduled.activity,
        input=scheduled.input,
        timeout=scheduled.timeout,
    )


CARRIED_INPUT_BYTES = 64 * 1024
"""A waited-for invocation carries its attempt when its whole payload stays this small."""


def carried_work(work: ActivityWork) -> dict[str, Any]:
    """What a waited-for invocation needs to run ``work`` without reading the history."""
    return {"activity": work.activity, "input": work.input, "timeout": work.timeout}


def attempt_from_carried(ref: ActivityRef, carried: Any) -> ActivityWork:
    """The attempt ``ref`` names, from what :func:`carried_work` sent (raises ValueError)."""
    if not isinstance(carried, dict) or not isinstance(carried.get("activity"), str):
        raise ValueError(f"not a carried activity attempt: {carried!r}")
    timeout = carried.get("timeout")
    if timeout is not None and not isinstance(timeout, int | float):
        raise ValueError(f"not a carried activity timeout: {timeout!r}")
    return ActivityWork(
        instance_id=ref.instance_id,
        run=ref.run,
        task_id=ref.task_id,
        attempt=ref.attempt,
        activity=carried["activity"],
        input=carried.get("input"),
        timeout=None if timeout is None else float(timeout),
    )


def run_referenced_attempt(
    store: HistoryStore,
    ref: ActivityRef,
    clock: Clock,
    limit: float | None,
    crash: dict[str, Any] | None = None,
    *,
    post: bool = True,
    work: ActivityWork | None = None,
) -> ActivityResult | None:
    """Run the attempt ``ref`` names and post its outcome; ``None`` if there was nothing to run.

    With ``crash`` (the ``{"Error", "Cause"}`` of an invocation that died) the
    attempt is not run but recorded as failed. Posting twice is harmless: the
    engine keeps the first outcome of an attempt and drops the rest. With
    ``post=False`` the outcome is only returned (the caller records it). With
    ``work`` (carried by a waited-for invocation, which is never delivered
    twice) the history is not read.
    """
    if work is None:
        try:
            history = store.history(ref.instance_id, run=ref.run)
        except InstanceNotFoundError:
            return None
        work = attempt_from_history(history, ref)
        if work is None:
            return None
    if crash is not None:
        detail = f"{crash.get('Error', 'Unknown')}: {crash.get('Cause', '')}".strip(": ")
        result = failed_result(work, ActivityCrashed(detail), clock.now())
    else:
        result = run_attempt(work, clock, limit)
    if post:
        store.post(ref.instance_id, result)
    return result


def error_summary(error: ErrorInfo | None) -> str:
    return "" if error is None else f"{error.type}: {error.message}"


_monotonic = time.monotonic
