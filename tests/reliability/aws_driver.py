"""Crash schedules through the AWS loop: the Lambdas' work on DynamoDB (moto), a simulated state machine.

:func:`drive_aws` runs a case the way the stack does, with the real loop
functions of :mod:`durable.runtime.aws_loop` (``orchestrate``, the
orchestrator Lambda's work; ``run_referenced_attempt``, the activity
Lambda's) and the real :class:`~durable.store.dynamodb.DynamoDBStore` on a
moto table, its ``park`` and its wake-ups. What stands in for Step Functions
is a small interpreter of ``infra/statemachine.asl.json``, one execution per
instance, each state as the definition says:

* ``Orchestrate``: a failure (a kill, or the response lost after the work was
  done) is caught: ``PrepareRecovery`` (events + 10, ``recover``, failures + 1),
  ``GiveUp`` at 8 failures in a row, ``RecoveryBackoff``, ``Orchestrate``.
  The ``ResultSelector`` resets failures.
* ``Route``: run, park, sleep, continue, hand_over (``NextGeneration``: events
  0, ``recover`` carried), succeed, fail.
* ``RunActivities``: each ref invokes the activity Lambda synchronously; one
  that fails is caught by ``ReportCrash``, which invokes it again with
  ``crash`` (retried up to 6 times) and records the attempt as failed.
* ``Dispatch``: asynchronous invocations, which Lambda itself tries up to 3
  times when the function fails; then ``Park`` (``park`` on the store; when
  it is refused the handler answers the token at once). A parked execution
  goes on when a post answers its token (the store's ``waker``) or when
  ``wait_seconds`` pass (``States.Timeout``); a failed Park is recovered.
* ``Sleep``: ``wait_seconds`` of virtual time.

Children's executions start when the orchestrator asks (``start_children``),
idempotently by instance, as ``StartExecution`` with a fixed name is. Time is
virtual and moves only when nothing else can happen (``RecoveryBackoff``
takes none); asynchronous invocations run in the order of their attempts
before any execution moves on, except that in a crashed run an execution
about to park may do so first (a Park racing the posts it waits for).
Results of remote activities then arrive in the same order in every run
(on real Lambdas, which of two activities finishes first is a race that
may change a result). A crashed run is compared with the uninterrupted one
task by task (:func:`by_task`): what each task went through, event for
event, is the same; only results of different tasks may be recorded in
another order (a local activity whose result a crash lost runs again in a
later step), so an activity the workflow stopped waiting for may have its
outcome recorded in one run only.

Faults, from a seeded :class:`~tests.reliability.harness.FaultPlan`: every
Lambda invocation gets its own :class:`AwsFaultyStore` view (one process),
which dies before or after ``create``, ``load``, ``commit``, ``post``,
``park`` and ``history``; an orchestrator's response is lost after it
finished (``orchestrate.response``); the Lambda's remaining time runs short
(the orchestrator hands back with ``continue``); and the hand-over
threshold is low, so executions hand over to successors. Kills in an
invocation that has no retry left are not drawn (Lambda drops an
asynchronous event after its third failure; a lost attempt is then found
after ``lost_after``, which the e2e tests cover), so that every schedule can
end as the uninterrupted run does.

A killed synchronous activity invocation is, by the definition, a failed
attempt (``ActivityCrashed``) that the workflow's retry policy handles. The
uninterrupted run a schedule is compared with is therefore the one in which
exactly those attempts failed that way (``crashed``).
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from durable.codec import encode
from durable.decision import Decision
from durable.errors import InstanceNotFoundError
from durable.history import (
    ActivityFailed,
    ActivityRetryScheduled,
    Event,
    EventMessage,
    Status,
)
from durable.runtime.aws_loop import (
    HAND_OVER_EVENTS,
    ActivityRef,
    LoopDecision,
    Observer,
    orchestrate,
    run_referenced_attempt,
)
from durable.runtime.start import create_instance, encode_input
from durable.store.dynamodb import DynamoDBStore, create_table
from durable.testing import EPOCH
from tests.reliability.harness import (
    IID,
    UNFINISHED,
    Case,
    Crash,
    FaultPlan,
    FaultyStore,
    Outcome,
    check_outcome,
    collect,
    comparable,
)

MAX_ROUNDS = 5000
GIVE_UP_FAILURES = 8
"""``GiveUp``: this many failures in a row end the execution (OrchestratorFailing)."""
ASYNC_TRIES = 3
"""Lambda runs an asynchronous event at most this often when the function fails."""
REPORT_TRIES = 7
"""``ReportCrash``: one invocation and 6 retries."""
PARK_FIRST = 0.5
"""Chance that an execution parks ahead of waiting asynchronous invocations (crashed runs)."""
CRASH = {"Error": "Crash", "Cause": "the activity Lambda died"}
"""What ``RunActivity``'s Catch passes to ``ReportCrash`` (``$.crash``)."""

Key = tuple[str, int, int, int]
"""An attempt: (instance, run, task id, attempt)."""


class AwsFaultyStore(FaultyStore):
    """A :class:`FaultyStore` that also dies around ``park`` and ``history`` (one Lambda process)."""

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        self._maybe_kill("history.before")
        events = self.inner.history(instance_id, run)
        self._maybe_kill("history.after")
        return events

    def park(self, instance_id: str, token: str) -> bool:
        self._maybe_kill("park.before")
        parked: bool = self.inner.park(instance_id, token)  # type: ignore[attr-defined]
        self._maybe_kill("park.after")
        return parked


class SimClock:
    """Virtual time, moved by the simulated state machine only."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@dataclass
class Execution:
    """One execution of the state machine (its successors after a hand-over included)."""

    instance_id: str
    state: str = "orchestrate"
    decision: dict[str, Any] = field(
        default_factory=lambda: {"events": 0, "recover": False, "failures": 0}
    )
    next: LoopDecision | None = None
    activities: list[ActivityRef] = field(default_factory=list)
    wait_seconds: int = 0
    due: datetime | None = None
    token: str | None = None
    generation: int = 0


class Tables:
    """Fresh DynamoDB tables on moto, one per driven case (inside ``mock_aws``)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._names = itertools.count()

    @contextmanager
    def table(self) -> Iterator[str]:
        name = f"rel-aws-{next(self._names)}"
        create_table(self.client, name)
        try:
            yield name
        finally:
            self.client.delete_table(TableName=name)


@contextmanager
def moto_tables() -> Iterator[Tables]:
    """A moto DynamoDB (serialized as real DynamoDB is) for :func:`drive_aws`."""
    import boto3
    from moto import mock_aws

    from tests.moto_dynamodb import serialized_moto_dynamodb

    with mock_aws(), serialized_moto_dynamodb():
        yield Tables(boto3.client("dynamodb", region_name="us-east-1"))


def aws_plan(seed: int) -> FaultPlan:
    """The crash schedule of ``seed`` on the AWS loop: at most 7 kills (``GiveUp`` is at 8)."""
    return FaultPlan(seed, budget=FaultPlan(seed).budget % 7 + 1)


class _Loop:
    """The simulated Step Functions side: executions, asynchronous invocations, tokens, time."""

    def __init__(
        self, inner: DynamoDBStore, case: Case, plan: FaultPlan | None, crashed: frozenset[Key]
    ) -> None:
        self.inner = inner
        self.case = case
        self.plan = plan
        self.crashed = crashed
        self.clock = SimClock(EPOCH)
        self.executions: dict[str, Execution] = {}
        self.runnable: deque[Execution] = deque()
        self.invocations: list[tuple[Key, int]] = []  # asynchronous events: (attempt, tries)
        self.tokens: dict[str, Execution] = {}
        self.token_ids = itertools.count(1)
        self.waiting_on: dict[str, list[str]] = {}
        self.reruns: list[str] = []
        self.path: Counter[str] = Counter()
        """States and transitions taken (shows what the schedules exercised)."""
        self.hand_over_events = HAND_OVER_EVENTS
        if plan is not None:
            self.hand_over_events = plan.rng.choice([HAND_OVER_EVENTS, HAND_OVER_EVENTS, 90, 150])

    # ------------------------------------------------------------------ plumbing

    def view(self, *, can_die: bool = True) -> AwsFaultyStore:
        return AwsFaultyStore(self.inner, self.plan if can_die else None)

    def done_with(self, view: FaultyStore) -> None:
        self.reruns += view.reruns

    def wake(self, token: str) -> None:
        """``SendTaskSuccess``: a token no longer waiting is ignored (as ``wake_with`` does)."""
        execution = self.tokens.pop(token, None)
        if execution is not None and execution.state == "parked" and execution.token == token:
            self.path["woken"] += 1
            execution.token = None
            self.go(execution, "orchestrate")

    def go(self, execution: Execution, state: str) -> None:
        execution.state = state
        self.runnable.append(execution)

    def start_execution(self, instance_id: str) -> None:
        """``StartExecution`` named after the instance: a second start changes nothing."""
        if instance_id not in self.executions:
            execution = Execution(instance_id)
            self.executions[instance_id] = execution
            self.runnable.append(execution)

    def park_first(self) -> bool:
        """Whether the next execution parks before the asynchronous invocations waiting to run
        post their results (a crashed run's choice; it changes no order of results)."""
        return (
            self.plan is not None
            and bool(self.runnable)
            and self.runnable[0].state in ("dispatch", "park")
            and self.plan.rng.random() < PARK_FIRST
        )

    def time_left(self) -> float:
        """The remaining time of one orchestrator invocation (constant: time is virtual)."""
        if self.plan is not None and self.plan.rng.random() < 0.3:
            return 1.0  # under TIME_MARGIN_SECONDS: hand back with ``continue``
        return 900.0

    def on_step(self, decision: Decision, ms: float) -> None:
        assert decision.status != Status.STUCK, f"{decision.instance_id} stuck: {decision.error}"
        self.waiting_on[decision.instance_id] = decision.waiting_on

    # ------------------------------------------------------------------ states

    def recover(self, execution: Execution) -> None:
        """A Task failed: ``PrepareRecovery``, ``GiveUp``, ``RecoveryBackoff`` (no virtual time)."""
        self.path["recovery"] += 1
        d = execution.decision
        execution.decision = {
            "events": d["events"] + 10,
            "recover": True,
            "failures": d["failures"] + 1,
        }
        if execution.decision["failures"] >= GIVE_UP_FAILURES:
            execution.state = "orchestrator_failing"
        else:
            self.go(execution, "orchestrate")

    def orchestrate(self, execution: Execution) -> None:
        view = self.view()
        seconds = self.time_left()
        try:
            decision = orchestrate(
                view,
                execution.instance_id,
                resolve=_resolve,
                clock=self.clock,
                time_left=lambda: seconds,
                recover=execution.decision["recover"],
                events=execution.decision["events"],
                hand_over_events=self.hand_over_events,
                observer=Observer(on_step=self.on_step, start_children=self.start_children),
            )
            if self.plan is not None and self.plan.kill("orchestrate.response"):
                raise Crash("the orchestrator's response was lost after its work")
        except Crash:
            self.recover(execution)
            return
        finally:
            self.done_with(view)
        payload = decision.as_payload()  # what travels: the ResultSelector's fields
        execution.decision = {
            "events": payload["events"],
            "recover": payload["recover"],
            "failures": 0,
        }
        execution.activities = [ActivityRef.parse(ref) for ref in payload["activities"]]
        execution.wait_seconds = payload["wait_seconds"]
        route = payload["next"]
        self.path[f"route {route}"] += 1
        if route == "run":
            self.go(execution, "run")
        elif route == "park":
            self.go(execution, "dispatch")
        elif route == "sleep":
            execution.state = "sleeping"
            execution.due = self.clock.now() + timedelta(seconds=execution.wait_seconds)
        elif route == "continue":
            self.go(execution, "orchestrate")
        elif route == "hand_over":  # NextGeneration, HandOver: a successor starts afresh
            execution.generation += 1
            execution.decision = {"events": 0, "recover": payload["recover"], "failures": 0}
            self.go(execution, "orchestrate")
        elif route in ("succeed", "fail"):
            execution.state = route
        else:
            raise AssertionError(f"UnknownDecision {route!r}")

    def start_children(self, ids: Any) -> None:
        for child_id in ids:
            self.start_execution(child_id)

    def run_activities(self, execution: Execution) -> None:
        """``RunActivities``: every ref synchronously, a failed one reported as crashed."""
        for ref in execution.activities:
            if not self.invoke(ref, crash=None, can_die=True):
                self.path["report crash"] += 1
                for tries in range(REPORT_TRIES):
                    if self.invoke(ref, crash=CRASH, can_die=tries < REPORT_TRIES - 1):
                        break
                else:
                    self.recover(execution)  # the Map failed: caught by PrepareRecovery
                    return
        self.go(execution, "orchestrate")

    def invoke(self, ref: ActivityRef, crash: dict[str, Any] | None, can_die: bool) -> bool:
        """One invocation of the activity Lambda; False if it died."""
        key = (ref.instance_id, ref.run, ref.task_id, ref.attempt)
        view = self.view(can_die=can_die)
        try:
            if crash is None and key in self.crashed:
                # The uninterrupted run a schedule is compared with: this attempt died here.
                run_referenced_attempt(view, ref, self.clock, None, crash=CRASH)
            else:
                run_referenced_attempt(view, ref, self.clock, None, crash=crash)
        except Crash:
            return False
        finally:
            self.done_with(view)
        return True

    def dispatch(self, execution: Execution) -> None:
        """``Dispatch``: asynchronous events for every ref, then ``Park``."""
        for ref in execution.activities:
            self.invocations.append(((ref.instance_id, ref.run, ref.task_id, ref.attempt), 0))
        self.go(execution, "park")

    def run_invocation(self) -> None:
        """The next asynchronous event (lowest attempt first); Lambda retries a failed one."""
        self.invocations.sort()
        key, tries = self.invocations.pop(0)
        ref = ActivityRef(*key)
        if not self.invoke(ref, crash=None, can_die=tries < ASYNC_TRIES - 1):
            self.path["async retry"] += 1
            self.invocations.append((key, tries + 1))

    def park(self, execution: Execution) -> None:
        token = f"{execution.instance_id}#{next(self.token_ids)}"
        view = self.view()
        try:
            try:
                parked = view.park(execution.instance_id, token)
            except InstanceNotFoundError:
                parked = False
        except Crash:
            self.recover(execution)  # the Park Task failed: caught by PrepareRecovery
            return
        finally:
            self.done_with(view)
        execution.state = "parked"
        execution.token = token
        execution.due = self.clock.now() + timedelta(seconds=execution.wait_seconds)
        self.tokens[token] = execution
        self.path["parked" if parked else "park refused"] += 1
        if not parked:
            self.wake(token)  # the park handler answers at once: mail is waiting

    def advance(self, execution: Execution) -> None:
        if execution.state == "orchestrate":
            self.orchestrate(execution)
        elif execution.state == "run":
            self.run_activities(execution)
        elif execution.state == "dispatch":
            self.dispatch(execution)
        elif execution.state == "park":
            self.park(execution)
        # A parked execution woken meanwhile was queued again already.

    def timeouts(self) -> bool:
        """Move virtual time to the next Sleep's end or Park's timeout; False if none."""
        waiting = [e for e in self.executions.values() if e.state in ("sleeping", "parked")]
        if not waiting:
            return False
        due = min(e.due for e in waiting if e.due is not None)
        self.clock.at = max(self.clock.at, due)
        for execution in waiting:
            if execution.due is not None and execution.due <= self.clock.at:
                self.path[f"{execution.state} ended"] += 1
                if execution.token is not None:  # States.Timeout: the token is dead
                    self.tokens.pop(execution.token, None)
                    execution.token = None
                execution.due = None
                self.go(execution, "orchestrate")
        return True


def _resolve(name: str) -> Any:
    from durable.workflow import get_workflow

    return get_workflow(name)


def recorded_crashes(outcome: Outcome) -> frozenset[Key]:
    """The attempts a schedule's kills made fail as crashed (``ReportCrash``)."""
    found = set()
    for iid, runs in outcome.histories.items():
        for number, history in enumerate(runs, 1):
            for event in history:
                if (
                    isinstance(event, ActivityFailed | ActivityRetryScheduled)
                    and event.error is not None
                    and event.error.type.endswith(".ActivityCrashed")
                ):
                    found.add((iid, number, event.task_id, event.attempt))
    return frozenset(found)


def drive_aws(
    case: Case,
    seed: int | None,
    tables: Tables,
    *,
    crashed: frozenset[Key] = frozenset(),
) -> Outcome:
    """Run ``case`` to its end through the AWS loop; with ``seed``, under its crash schedule.

    ``crashed``: attempts whose activity invocation dies (what a schedule's kills
    did), for the uninterrupted run a schedule is compared with.
    """
    plan = aws_plan(seed) if seed is not None else None
    with tables.table() as name:
        loop: _Loop
        inner = DynamoDBStore(name, client=tables.client, waker=lambda token: loop.wake(token))
        loop = _Loop(inner, case, plan, crashed)
        payload = encode_input(case.workflow, case.input)
        while True:  # the API: create (a client retries), then StartExecution
            view = loop.view()
            try:
                create_instance(view, case.workflow, payload, IID, EPOCH)
                break
            except Crash:
                continue
        loop.start_execution(IID)
        for name_, data, when in case.events:
            if when == "early":
                inner.post(IID, EventMessage(event=name_, data=encode(data), received_at=EPOCH))
        pending_events = [(n, d) for n, d, when in case.events if when == "waiting"]
        for _ in range(MAX_ROUNDS):
            if loop.invocations and not loop.park_first():
                loop.run_invocation()
                continue
            if loop.runnable:
                loop.advance(loop.runnable.popleft())
                continue
            raised = next(
                (
                    (n, d)
                    for n, d in pending_events
                    if any(f"event {n!r}" in w for w in loop.waiting_on.get(IID, []))
                ),
                None,
            )
            if raised is not None:  # the API posts it; the post answers the parked execution
                pending_events.remove(raised)
                message = EventMessage(
                    event=raised[0], data=encode(raised[1]), received_at=loop.clock.now()
                )
                inner.post(IID, message)
                continue
            if loop.timeouts():
                continue
            unfinished = inner.list_instances(status=UNFINISHED, limit=1_000_000)
            states = {e.instance_id: e.state for e in loop.executions.values()}
            assert not unfinished, f"no execution moves, instances unfinished: {states}"
            break
        else:
            raise AssertionError(f"not finished after {MAX_ROUNDS} rounds")
        outcome = collect(inner, case)
    outcome.reruns = loop.reruns
    outcome.path = loop.path
    if plan is not None:
        outcome.kills = plan.kills
        outcome.duplicated = plan.duplicated
    return outcome


def check_schedule(
    case: Case,
    seed: int,
    tables: Tables,
    clean_runs: dict[tuple[str, frozenset[Key]], Outcome] | None = None,
) -> Outcome:
    """Run ``case`` under the schedule of ``seed`` and check it against the uninterrupted run
    (the one with the same crashed activity attempts); returns the crashed run's outcome.

    ``clean_runs`` caches uninterrupted runs by case and crashed attempts.

    Raises:
        AssertionError: an invariant does not hold (see :func:`harness.check_outcome`).
    """
    cache = clean_runs if clean_runs is not None else {}
    chaotic = drive_aws(case, seed, tables)
    crashed = recorded_crashes(chaotic)
    key = (case.name, crashed)
    if key not in cache:
        cache[key] = drive_aws(case, None, tables, crashed=crashed)
    clean = cache[key]
    check_outcome(clean, chaotic, same_history=False)
    for iid, runs in clean.histories.items():
        got = chaotic.histories[iid]
        assert len(got) == len(runs), f"{iid} ran {len(got)} times, not {len(runs)}"
        for number, (want, have) in enumerate(zip(runs, got, strict=True), 1):
            wanted, had = by_task(want), by_task(have)
            for task in sorted(wanted.keys() | had.keys(), key=str):
                assert _same_task(wanted.get(task, []), had.get(task, [])), (
                    f"history of {iid} run {number} differs for task {task}: "
                    f"{had.get(task)} != {wanted.get(task)}"
                )
    return chaotic


def _same_task(want: list[dict[str, Any]], have: list[dict[str, Any]]) -> bool:
    """The same events, or the same but for one outcome recorded in one run only: an
    activity the workflow no longer waited for (an ``all`` that failed first) whose result
    arrived before the end in one run and after it in the other."""
    if want == have:
        return True
    short, long = sorted((want, have), key=len)
    return (
        len(long) == len(short) + 1
        and long[:-1] == short
        and long[-1]["kind"] in ("ActivityCompleted", "ActivityFailed")
    )


def by_task(history: Sequence[Event]) -> dict[int | None, list[dict[str, Any]]]:
    """A history's events per task id (``None``: the instance's own), in order, without
    ``seq``: a crash may record results of different tasks in another order (an attempt
    whose result was lost runs again later), never change what one task went through."""
    found: dict[int | None, list[dict[str, Any]]] = {}
    for event in comparable(history):
        event.pop("seq")
        found.setdefault(event.get("task_id"), []).append(event)
    return found
