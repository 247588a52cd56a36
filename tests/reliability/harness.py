"""Fault injection for the reliability tests: a crashing store, workflows to crash, two drivers.

* :class:`FaultyStore` implements the ``HistoryStore`` protocol by delegating
  to a real store (memory or SQLite) and, driven by a seeded
  :class:`FaultPlan`, "kills the process" at a boundary: before or after
  ``create``, ``load``, ``commit`` and ``post``, and inside a ``Runtime``'s
  commit once it started the step's activities (``commit.ready``). A kill raises :class:`Crash`
  (a ``BaseException``: user code and ``except Exception`` cannot swallow
  it) and *fences* the view: every later call through it raises too, as a
  dead process writes nothing more. After a commit the kill means "committed,
  but the worker never learned it"; around an activity's ``post``, "the
  activity ran but its result was lost" or "posted, then died". Besides kills
  the plan delivers results twice (the same message again, and a copy under a
  new id, as a re-run attempt would post).
* :func:`drive` is a deterministic, single-threaded worker built from the
  real parts: :func:`durable.runtime.step.step`, :func:`run_activity`, and
  the recovery rule of :class:`durable.runtime.local.Runtime` (a fresh worker
  steps every unfinished instance and starts the attempts its history still
  waits for). Time is virtual and moves to the next wake-up only when nothing
  else can happen, so a crashed run and an uninterrupted one are comparable
  event for event.
* :func:`drive_runtime` runs the real ``Runtime`` (time skipping) on a
  ``FaultyStore``; each kill ends that runtime and a new one recovers.
* :func:`check_history` and :func:`check_outcome` state the invariants.

Cases are every example in ``examples/`` and programs made by
:func:`random_program` for the interpreter workflow ``rel_program``.
Everything is reproducible from ``(case, seed)``; :func:`reproduce_hint` says how.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from durable import Context, RetryPolicy, Runtime, Status, activity, activity_info, workflow
from durable.codec import encode
from durable.decision import ActivityWork, Decision
from durable.errors import WorkflowFailed
from durable.history import (
    FINAL_EVENTS,
    ActivityCompleted,
    ActivityFailed,
    ActivityResult,
    ActivityRetryScheduled,
    ActivityScheduled,
    ChildCompleted,
    ChildFailed,
    ChildScheduled,
    Event,
    EventMessage,
    EventWaitStarted,
    InstanceStatus,
    Message,
    PatchMarker,
    SideEffectRecorded,
    TimerFired,
    TimerScheduled,
    WorkflowStarted,
    new_message_id,
)
from durable.runtime.activity import run_activity
from durable.runtime.start import create_instance, encode_input
from durable.runtime.step import step
from durable.store import HistoryStore, MemoryStore, Snapshot, SQLiteStore
from durable.tasks import Task
from durable.testing import EPOCH
from durable.workflow import Workflow, get_workflow
from examples.fan_out_fan_in import Batch, word_report
from examples.human_approval import ExpenseRequest, expense_approval
from examples.monitor import Watch, monitor_job
from examples.order_saga import Order, order_saga
from examples.remind_user import User, remind_user

IID = "rel-1"
UNFINISHED = [Status.PENDING, Status.RUNNING, Status.STUCK]
MAX_ROUNDS = 3000
ALWAYS = 99
"""``fail`` value of an activity call that fails on every attempt."""


class Crash(BaseException):
    """The injected death of a worker process (nothing it holds in memory survives)."""


# ----------------------------------------------------------------------------- faults


class FaultPlan:
    """Which boundaries kill the worker, from a seed.

    Args:
        seed: everything random about the schedule comes from it.
        rate: chance that one boundary kills (default: drawn from the seed).
        budget: most kills in one schedule (default: 1 to 8, from the seed),
            so that every schedule ends.
        duplicates: chance that an activity result is delivered twice.
    """

    def __init__(
        self,
        seed: int,
        *,
        rate: float | None = None,
        budget: int | None = None,
        duplicates: float = 0.15,
    ) -> None:
        self.rng = random.Random(seed)
        self.rate = rate if rate is not None else self.rng.choice([0.03, 0.08, 0.15, 0.3])
        self.budget = budget if budget is not None else self.rng.randint(1, 8)
        self.duplicates = duplicates
        self.kills: list[str] = []
        """Every boundary that killed, in order (shown when a check fails)."""
        self.duplicated = 0

    def kill(self, boundary: str) -> bool:
        if len(self.kills) >= self.budget or self.rng.random() >= self.rate:
            return False
        self.kills.append(boundary)
        return True

    def duplicate(self) -> bool:
        if self.rng.random() < self.duplicates:
            self.duplicated += 1
            return True
        return False


class FaultyStore:
    """A ``HistoryStore`` that delegates to ``inner`` and dies where ``plan`` says.

    One view stands for one worker process; after its kill every call raises
    :class:`Crash`. ``reruns`` collects activity results posted for an attempt
    whose outcome the history had already recorded (an activity that ran again).
    """

    def __init__(self, inner: HistoryStore, plan: FaultPlan | None) -> None:
        self.inner = inner
        self.plan = plan
        self.dead = False
        self.reruns: list[str] = []
        self.calls = {"load": 0, "commit": 0, "conflict": 0, "post": 0}
        self.started_before_outcome = False
        """This view's attempt began before any outcome of it could be recorded (a run already
        under way when another was dispatched): its post is not a run after a recorded one."""

    @property
    def path(self) -> str | None:
        """The inner store's file, so that a Runtime on this view sees the other workers."""
        path = getattr(self.inner, "path", None)
        return path if isinstance(path, str) else None

    def _alive(self) -> None:
        if self.dead:
            raise Crash("this worker is dead")

    def _maybe_kill(self, boundary: str) -> None:
        self._alive()
        if self.plan is not None and self.plan.kill(boundary):
            self.dead = True
            raise Crash(boundary)

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        self._maybe_kill("create.before")
        created = self.inner.create(instance_id, started)
        self._maybe_kill("create.after")
        return created

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        self._maybe_kill("load.before")
        self.calls["load"] += 1
        snapshot = self.inner.load(instance_id, after=after)
        self._maybe_kill("load.after")
        return snapshot

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        from durable.errors import ConflictError

        self._maybe_kill("commit.before")
        self.calls["commit"] += 1

        def ready() -> None:
            assert on_ready is not None
            on_ready()
            # The Runtime started the step's activities; in SQLite the commit is not
            # written yet, so dying here rolls it back under attempts already running.
            self._maybe_kill("commit.ready")

        try:
            version = self.inner.commit(
                decision,
                expected_version=expected_version,
                on_ready=None if on_ready is None else ready,
            )
        except ConflictError:
            self.calls["conflict"] += 1
            raise
        self._maybe_kill("commit.after")
        return version

    def post(self, instance_id: str, message: Message) -> bool:
        if isinstance(message, ActivityResult):
            self._maybe_kill("post.before")  # the activity ran; its result is lost
            recorded = recorded_outcome(
                self.inner.history(instance_id, run=message.run), message.task_id, message.attempt
            )
            if recorded is not None and not self.started_before_outcome:
                self.reruns.append(
                    f"{instance_id} task {message.task_id} attempt {message.attempt} ran again "
                    f"after {recorded.kind} #{recorded.seq} was recorded"
                )
        else:
            self._alive()
        self.calls["post"] += 1
        accepted = self.inner.post(instance_id, message)
        if isinstance(message, ActivityResult) and self.plan is not None:
            if self.plan.duplicate():
                self.inner.post(instance_id, message)  # redelivered as is
            if self.plan.duplicate():
                self.inner.post(instance_id, message.model_copy(update={"id": new_message_id()}))
            self._maybe_kill("post.after")
        return accepted

    def get(self, instance_id: str) -> InstanceStatus | None:
        self._alive()
        return self.inner.get(instance_id)

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        self._alive()
        return self.inner.history(instance_id, run)

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        self._alive()
        return self.inner.list_instances(status=status, workflow=workflow, limit=limit)

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        self._alive()
        return self.inner.ready(now, limit)

    def delete(self, instance_id: str) -> bool:
        self._alive()
        return self.inner.delete(instance_id)

    def close(self) -> None:
        """Closing a view leaves the shared store open (the test owns it)."""


def new_store(kind: str) -> HistoryStore:
    """A fresh store: ``"memory"`` or ``"sqlite"`` (an in-memory SQLite database)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(":memory:", synchronous="OFF")
    raise ValueError(kind)


# ----------------------------------------------------------------------------- generated workflows


class Flaky(Exception):
    """What ``rel_work`` raises on the attempts it is told to fail."""


@activity(name="rel_work")
def rel_work(key: str, fail: int) -> str:
    """Fails attempts 1..``fail`` (every attempt if ``fail`` is ALWAYS), then succeeds."""
    if fail >= ALWAYS:
        raise Flaky(f"{key} always fails")
    # The outcome depends on the attempt only, so an attempt run again after a
    # crash ends as it did the first time, as a well-behaved activity would.
    attempt = activity_info().attempt
    if attempt <= fail:
        raise Flaky(f"{key} failed attempt {attempt}")
    return f"{key}@{fail + 1}"


@activity(name="rel_work_local", local=True)
def rel_work_local(key: str, fail: int) -> str:
    """``rel_work`` run inside the orchestrator on AWS (``local=True``)."""
    return rel_work(key, fail)


def _task(ctx: Context, op: dict[str, Any]) -> Task[Any]:
    if op["op"] == "sleep":
        return ctx.sleep(op["seconds"])
    if op["op"] == "event":
        return ctx.wait_for_event(op["name"], timeout=op["timeout"])
    retry = None
    if op["attempts"] > 1:
        retry = RetryPolicy(
            max_attempts=op["attempts"],
            initial_interval=timedelta(seconds=op["interval"]),
            backoff=2.0,
        )
    work = rel_work_local if op.get("local") else rel_work
    return ctx.call(work, op["key"], op["fail"], retry=retry)


@workflow(name="rel_program")
def rel_program(ctx: Context, spec: dict[str, Any]) -> Generator[Any, Any, list[Any]]:
    """Runs the operations of ``spec["ops"]``; continues as new ``spec["loops"]`` times."""
    out: list[Any] = list(spec.get("carried", []))
    for i, op in enumerate(spec["ops"]):
        kind = op["op"]
        if kind in ("call", "sleep"):
            try:
                out.append((yield _task(ctx, op)))
            except Flaky as exc:
                out.append(f"error: {exc}")
        elif kind == "all":
            try:
                out.append((yield ctx.all([_task(ctx, item) for item in op["items"]])))
            except Flaky as exc:
                out.append(f"error: {exc}")
        elif kind == "any":
            tasks = [_task(ctx, item) for item in op["items"]]
            winner = yield ctx.any(tasks)
            index = next(i for i, t in enumerate(tasks) if t is winner)
            try:
                out.append([index, winner.result])
            except Flaky as exc:
                out.append([index, f"error: {exc}"])
            except TimeoutError:
                out.append([index, "timed out"])
        elif kind == "event":
            try:
                out.append((yield ctx.wait_for_event(op["name"], timeout=op["timeout"])))
            except TimeoutError:
                out.append("timed out")
        elif kind == "effect":
            out.append([str(ctx.uuid()), ctx.now().isoformat(), ctx.random().random()])
        elif kind == "status":
            ctx.set_status({"op": i})
        elif kind == "child":
            try:
                out.append((yield ctx.child(rel_program, op["spec"])))
            except WorkflowFailed as exc:
                out.append(f"child failed: {exc.status}")
            except Flaky as exc:
                out.append(f"child error: {exc}")
        elif kind == "fail":
            raise Flaky("the workflow gave up")
    if spec.get("loops", 0) > 0:
        ctx.continue_as_new({**spec, "loops": spec["loops"] - 1, "carried": out})
    return out


def random_program(
    rng: random.Random,
    *,
    flaky: bool = True,
    events: bool = True,
    effects: bool = True,
    local: bool = False,
    depth: int = 0,
) -> dict[str, Any]:
    """A random spec for ``rel_program`` (calls, retries, timers, groups, events, children, ...).

    ``flaky=False`` keeps every activity's outcome independent of its attempt
    number (for drivers that cannot tell the activity which attempt it runs).
    ``local=True`` makes some calls local activities (run inside the AWS
    orchestrator); without it the same seed gives the same spec as before.
    """
    counter = iter(range(10_000))

    def call(can_fail: bool = True) -> dict[str, Any]:
        fail = rng.choice([0, 0, 1, 2, 3]) if flaky else rng.choice([0, 0, 0, ALWAYS])
        if not can_fail:
            fail = 0
        op = {
            "op": "call",
            "key": f"k{depth}.{next(counter)}",
            "fail": fail,
            "attempts": rng.choice([1, 2, 3]),
            "interval": rng.choice([0, 1, 5]),
        }
        if local and rng.random() < 0.3:
            op["local"] = True
        return op

    def sleep() -> dict[str, Any]:
        return {"op": "sleep", "seconds": rng.choice([0, 1, 7, 60])}

    def event(when: str | None = None) -> dict[str, Any]:
        when = when or rng.choice(["early", "waiting", "never"] if flaky else ["early", "never"])
        timeout = 30 if when == "never" else rng.choice([None, 30])
        return {
            "op": "event",
            "name": f"e{depth}.{next(counter)}",
            "when": when,
            "timeout": timeout,
        }

    kinds = ["call", "call", "sleep", "all", "any", "status"]
    if events:
        kinds.append("event")
    if effects:
        kinds.append("effect")
    if depth == 0:
        kinds.append("child")
    ops: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(kinds)
        if kind == "call":
            ops.append(call())
        elif kind == "sleep":
            ops.append(sleep())
        elif kind == "all":
            # On real threads, which of two failing activities fails first is a race.
            items = [call(can_fail=flaky) for _ in range(rng.randint(0, 3))]
            ops.append({"op": "all", "items": items})
        elif kind == "any" and not flaky:
            # On real threads the first of two activities to finish is a race: one
            # contender, and a timer that only fires once nothing else can happen.
            contender = call() if not events or rng.random() < 0.5 else event()
            ops.append({"op": "any", "items": [contender, {"op": "sleep", "seconds": 60}]})
        elif kind == "any":
            choices = [call, sleep] + ([event] if events else [])
            items = [rng.choice(choices)() for _ in range(rng.randint(1, 3))]
            if any(i["op"] == "event" for i in items) and all(i["op"] != "sleep" for i in items):
                items.append({"op": "sleep", "seconds": 60})  # so that the group always ends
            ops.append({"op": "any", "items": items})
        elif kind == "event":
            ops.append(event())
        elif kind == "child":
            child = random_program(
                rng, flaky=flaky, events=False, effects=effects, local=local, depth=1
            )
            ops.append({"op": "child", "spec": child})
        else:
            ops.append({"op": kind})
    if rng.randrange(10) == 0:
        ops.append({"op": "fail"})
    has_events = any(i["op"] == "event" for op in ops for i in [op, *op.get("items", [])])
    loops = rng.choice([0, 0, 0, 1, 2]) if depth == 0 and not has_events else 0
    return {"ops": ops, "loops": loops}


def program_events(spec: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The events of a program: ``(name, data, when)`` with when early, waiting or never."""
    found = []
    for op in spec["ops"]:
        for item in [op, *op.get("items", [])]:
            if item["op"] == "event":
                found.append((item["name"], item["name"], item["when"]))
    return found


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One workflow run: what to start, which events to raise and how to compare results."""

    name: str
    workflow: Workflow[Any, Any]
    input: Any
    events: tuple[tuple[str, Any, str], ...] = ()
    """``(event name, data, when)``: ``"early"`` right after the start, ``"waiting"``
    once the workflow waits for it, ``"never"``."""
    normalize: Callable[[Any], Any] = lambda output: output


def _round_hours(output: Any) -> Any:
    return {**output, "waited_hours": round(output["waited_hours"], 2)}


EXAMPLE_CASES: tuple[Case, ...] = (
    Case("fan_out", word_report, Batch(words=["durable", "workflows", "are", "just", "code"])),
    Case(
        "approval_early",
        expense_approval,
        ExpenseRequest(request_id="r1", requester="Ada", amount=12.5),
        (("approval", {"approved": True, "by": "Grace"}, "early"),),
        _round_hours,
    ),
    Case(
        "approval_waiting",
        expense_approval,
        ExpenseRequest(request_id="r2", requester="Ada", amount=99),
        (("approval", {"approved": False, "by": "Linus"}, "waiting"),),
        _round_hours,
    ),
    Case(
        "approval_timeout",
        expense_approval,
        ExpenseRequest(request_id="r3", requester="Ada", amount=1200),
        normalize=_round_hours,
    ),
    Case("monitor", monitor_job, Watch(job_id="job-1", done_after_checks=7)),
    Case("saga_ok", order_saga, Order(order_id="o1", amount=42.5, sku="book", quantity=2)),
    Case(
        "saga_ship_fails",
        order_saga,
        Order(order_id="o2", amount=42.5, sku="book", fail_at="shipping"),
    ),
    Case(
        "saga_pay_fails", order_saga, Order(order_id="o3", amount=1.0, sku="pen", fail_at="payment")
    ),
    Case("remind", remind_user, User(name="Ada", email="ada@example.com")),
)
CASES_BY_NAME = {case.name: case for case in EXAMPLE_CASES}


def program_case(seed: int, *, steady: bool = False, local: bool = False) -> Case:
    """The generated program of ``seed``: ``program-<seed>``, or ``steady-<seed>`` whose
    results depend neither on attempt numbers nor on the clock (for the Runtime driver),
    or ``local-<seed>`` with some local activities (for the AWS driver)."""
    options: dict[str, Any] = {"flaky": False, "effects": False} if steady else {}
    spec = random_program(random.Random(seed), local=local, **options)
    name = f"{'steady' if steady else 'local' if local else 'program'}-{seed}"
    return Case(name, rel_program, spec, tuple(program_events(spec)))


def case_named(name: str) -> Case:
    """An example case by name, or ``program-<seed>`` / ``steady-<seed>`` / ``local-<seed>``."""
    kind, _, seed = name.partition("-")
    if kind in ("program", "steady", "local") and seed.isdigit():
        return program_case(int(seed), steady=kind == "steady", local=kind == "local")
    return CASES_BY_NAME[name]


# ----------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """How a driven case ended."""

    results: dict[str, tuple[str, Any, str | None]]
    """Per instance (children included): status, normalized output, error type."""
    histories: dict[str, list[list[Event]]]
    """Per instance, the history of every run."""
    runs: list[tuple[str, int, int, int]] = field(default_factory=list)
    """Every activity attempt that ran: (instance, run, task id, attempt)."""
    reruns: list[str] = field(default_factory=list)
    """Attempts that ran although their outcome was already recorded."""
    kills: list[str] = field(default_factory=list)
    duplicated: int = 0
    path: Counter[str] = field(default_factory=Counter)
    """What a driver went through besides kills (e.g. the AWS loop's states)."""


def recorded_outcome(history: Sequence[Event], task_id: int, attempt: int) -> Event | None:
    """The recorded outcome of one activity attempt, if any."""
    for event in history:
        if (
            isinstance(event, ActivityCompleted | ActivityFailed | ActivityRetryScheduled)
            and event.task_id == task_id
            and event.attempt == attempt
        ):
            return event
    return None


def check_history(history: Sequence[Event], where: str = "") -> None:
    """The invariants of one run's history; raises AssertionError naming what is wrong.

    Sequence numbers run 1..n; the run begins with WorkflowStarted and ends with
    exactly one final event; every command has one task id; every completion
    answers exactly one scheduled task or attempt, at most once; a retry follows
    the failure of the attempt before it; nothing follows a task's final outcome.
    """
    assert history, f"{where}: empty history"
    assert isinstance(history[0], WorkflowStarted), f"{where}: does not begin with WorkflowStarted"
    seqs = [e.seq for e in history]
    assert seqs == list(range(1, len(history) + 1)), f"{where}: seq is not 1..n: {seqs}"
    finals = [i for i, e in enumerate(history) if isinstance(e, FINAL_EVENTS)]
    assert finals == [len(history) - 1], f"{where}: final events at {finals} of {len(history)}"
    commands: dict[int, Event] = {}
    attempts: set[tuple[int, int]] = set()
    answered: set[tuple[str, int, int]] = set()
    settled: set[int] = set()
    for e in history[1:]:
        label = f"{where}: {e.kind} #{e.seq}"
        if isinstance(e, ActivityScheduled):
            assert e.task_id not in settled, f"{label} after the task's final outcome"
            if e.attempt == 1:
                assert e.task_id not in commands, f"{label} reuses task id {e.task_id}"
                commands[e.task_id] = e
            else:
                assert ("retry", e.task_id, e.attempt - 1) in answered, f"{label}: no retry before"
            assert (e.task_id, e.attempt) not in attempts, f"{label} scheduled twice"
            attempts.add((e.task_id, e.attempt))
        elif isinstance(
            e, TimerScheduled | EventWaitStarted | ChildScheduled | SideEffectRecorded | PatchMarker
        ):
            assert e.task_id not in commands, f"{label} reuses task id {e.task_id}"
            commands[e.task_id] = e
        elif isinstance(e, ActivityCompleted | ActivityFailed | ActivityRetryScheduled):
            assert (e.task_id, e.attempt) in attempts, f"{label} answers no scheduled attempt"
            key = (
                "retry" if isinstance(e, ActivityRetryScheduled) else "end",
                e.task_id,
                e.attempt,
            )
            assert ("end", e.task_id, e.attempt) not in answered, f"{label}: attempt already ended"
            assert ("retry", e.task_id, e.attempt) not in answered, f"{label}: attempt answered"
            assert e.task_id not in settled, f"{label}: task already settled"
            answered.add(key)
            if key[0] == "end":
                settled.add(e.task_id)
        elif isinstance(e, TimerFired):
            command = commands.get(e.task_id)
            assert isinstance(command, TimerScheduled) or (
                isinstance(command, EventWaitStarted) and command.timeout_at is not None
            ), f"{label} answers no timer"
            assert ("fired", e.task_id, 0) not in answered, f"{label}: timer fired twice"
            answered.add(("fired", e.task_id, 0))
        elif isinstance(e, ChildCompleted | ChildFailed):
            assert isinstance(commands.get(e.task_id), ChildScheduled), f"{label}: no child"
            assert ("child", e.task_id, 0) not in answered, f"{label}: child answered twice"
            answered.add(("child", e.task_id, 0))


def collect(store: HistoryStore, case: Case) -> Outcome:
    """Every instance's result and histories; asserts that none is left unfinished."""
    results: dict[str, tuple[str, Any, str | None]] = {}
    histories: dict[str, list[list[Event]]] = {}
    for header in store.list_instances(limit=1_000_000):
        iid = header.instance_id
        assert header.status.is_terminal, f"instance {iid} left {header.status}: {header.error}"
        output = header.output
        if iid == IID and header.status == Status.COMPLETED:
            output = case.normalize(output)
        error = header.error.type if header.error else None
        results[iid] = (header.status.value, output, error)
        histories[iid] = [store.history(iid, run=r) for r in range(1, header.run + 1)]
    return Outcome(results, histories)


def comparable(history: Sequence[Event]) -> list[dict[str, Any]]:
    """A history without what legitimately differs between runs (wall-clock stamps, tracebacks)."""
    out = []
    for event in history:
        data = event.model_dump(mode="json", exclude={"timestamp"})
        if isinstance(data.get("error"), dict):
            data["error"] = {k: data["error"][k] for k in ("type", "message")}
        out.append(data)
    return out


def without_redispatches(history: Sequence[Event]) -> list[dict[str, Any]]:
    """:func:`comparable` without ``ActivityRedispatched`` (a lost attempt dispatched again:
    how it was delivered, which a crash may change) and the ``seq`` those shift."""
    return [
        {k: v for k, v in event.items() if k != "seq"}
        for event in comparable(history)
        if event["kind"] != "ActivityRedispatched"
    ]


def check_outcome(clean: Outcome, chaotic: Outcome, *, same_history: bool = True) -> None:
    """The invariants of a crashed run against the uninterrupted one."""
    for iid, runs in chaotic.histories.items():
        for number, history in enumerate(runs, 1):
            check_history(history, f"{iid} run {number}")
    assert not chaotic.reruns, f"recorded activities ran again: {chaotic.reruns}"
    assert chaotic.results == clean.results, (
        f"results differ from an uninterrupted run: {chaotic.results} != {clean.results}"
    )
    if same_history:
        for iid, runs in clean.histories.items():
            got = [comparable(h) for h in chaotic.histories[iid]]
            assert got == [comparable(h) for h in runs], f"history of {iid} differs"


def reproduce_hint(case: str, seed: int, driver: str = "step") -> str:
    return (
        f"case={case} seed={seed} driver={driver}; reproduce with "
        f"`.venv/bin/python -m tests.reliability.long_run --case {case} --seed {seed} "
        f"--driver {driver} --count 1`"
    )


# ----------------------------------------------------------------------------- the step driver


@dataclass
class _Worker:
    """What one worker process holds in memory (all of it lost when it dies)."""

    store: FaultyStore
    ready: deque[str] = field(default_factory=deque)
    recovering: set[str] = field(default_factory=set)
    queue: list[ActivityWork] = field(default_factory=list)
    waiting_on: dict[str, list[str]] = field(default_factory=dict)

    def enqueue(self, instance_id: str) -> None:
        if instance_id not in self.ready:
            self.ready.append(instance_id)

    def recover(self) -> None:
        """What a new Runtime does first: every unfinished instance is stepped, its
        outstanding attempts started."""
        for header in self.store.list_instances(status=UNFINISHED, limit=1_000_000):
            self.recovering.add(header.instance_id)
            self.enqueue(header.instance_id)

    def absorb(self, instance_id: str, decision: Decision) -> None:
        recovering = instance_id in self.recovering
        self.recovering.discard(instance_id)
        work = decision.pending if recovering else decision.dispatch
        known = {_key(w) for w in self.queue}
        self.queue.extend(w for w in work if _key(w) not in known)
        self.queue.sort(key=_key)
        self.waiting_on[instance_id] = decision.waiting_on
        if decision.more or decision.next_run is not None:
            self.enqueue(instance_id)
        for child in decision.children:
            self.enqueue(child.instance_id)
        for outgoing in decision.messages:
            self.enqueue(outgoing.instance_id)


def _clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def _key(work: ActivityWork) -> tuple[str, int, int, int]:
    return (work.instance_id, work.run, work.task_id, work.attempt)


def _resolve(name: str) -> Workflow[Any, Any]:
    return get_workflow(name)


def drive(case: Case, seed: int | None, store_kind: str = "memory") -> Outcome:
    """Run ``case`` to its end with the step driver; with ``seed``, under its crash schedule."""
    inner = new_store(store_kind)
    plan = FaultPlan(seed) if seed is not None else None
    now = EPOCH
    runs: list[tuple[str, int, int, int]] = []
    reruns: list[str] = []
    payload = encode_input(case.workflow, case.input)
    view = FaultyStore(inner, plan)
    while True:  # a client starting the instance retries until it is created
        try:
            create_instance(view, case.workflow, payload, IID, now)
            break
        except Crash:
            view = FaultyStore(inner, plan)
    for name, data, when in case.events:
        if when == "early":
            inner.post(IID, EventMessage(event=name, data=encode(data), received_at=now))
    pending_events = [(name, data) for name, data, when in case.events if when == "waiting"]
    worker: _Worker | None = None
    try:
        for _ in range(MAX_ROUNDS):
            try:
                if worker is None:
                    view = FaultyStore(inner, plan)
                    worker = _Worker(view)
                    worker.recover()
                if worker.ready:
                    iid = worker.ready.popleft()
                    decision = step(view, iid, _resolve, now)
                    if decision is None:
                        continue
                    assert decision.status != Status.STUCK, f"{iid} stuck: {decision.error}"
                    if plan is not None and plan.kill("dispatch"):
                        raise Crash("between the step and the dispatch of its activities")
                    worker.absorb(iid, decision)
                    continue
                if worker.queue:
                    work = worker.queue.pop(0)
                    history = inner.history(work.instance_id, run=work.run)
                    recorded = recorded_outcome(history, work.task_id, work.attempt)
                    if recorded is not None:
                        reruns.append(f"{_key(work)} ran again after {recorded.kind}")
                    result = run_activity(work, now=_clock(now))
                    runs.append(_key(work))
                    view.post(work.instance_id, result)
                    worker.enqueue(work.instance_id)
                    continue
                for iid in view.ready(now):
                    worker.enqueue(iid)
                if worker.ready:
                    continue
                raised = next(
                    (
                        (name, data)
                        for name, data in pending_events
                        if any(f"event {name!r}" in w for w in worker.waiting_on.get(IID, []))
                    ),
                    None,
                )
                if raised is not None:
                    pending_events.remove(raised)
                    message = EventMessage(event=raised[0], data=encode(raised[1]), received_at=now)
                    inner.post(IID, message)
                    worker.enqueue(IID)
                    continue
                unfinished = inner.list_instances(status=UNFINISHED, limit=1_000_000)
                if not unfinished:
                    break
                wakes = [h.wake_at for h in unfinished if h.wake_at is not None]
                assert wakes, f"no progress possible: {worker.waiting_on}"
                now = max(now, min(wakes))
            except Crash:
                worker = None
        else:
            raise AssertionError(f"not finished after {MAX_ROUNDS} rounds")
        outcome = collect(inner, case)
    finally:
        inner.close()
    outcome.runs = runs
    outcome.reruns = reruns
    if plan is not None:
        outcome.kills = plan.kills
        outcome.duplicated = plan.duplicated
    return outcome


# ----------------------------------------------------------------------------- the Runtime driver


def drive_runtime(case: Case, seed: int | None, store_kind: str = "memory") -> Outcome:
    """Run ``case`` on the real ``Runtime`` (time skipping); each kill ends that runtime
    and a new one, created on the same store, recovers the instance."""
    inner = new_store(store_kind)
    plan = FaultPlan(seed, budget=FaultPlan(seed).budget % 4 + 1) if seed is not None else None
    reruns: list[str] = []
    try:
        create_instance(inner, case.workflow, encode_input(case.workflow, case.input), IID, EPOCH)
        for name, data, when in case.events:
            assert when != "waiting", "the Runtime driver raises events early or never"
            if when == "early":
                inner.post(IID, EventMessage(event=name, data=encode(data)))
        for _ in range(20):
            view = FaultyStore(inner, plan)
            runtime = Runtime(view, time_skipping=True, workflows=(case.workflow,))
            try:
                runtime.wait(IID, timeout=60)
            except Crash:
                continue
            except WorkflowFailed:
                pass
            finally:
                runtime.close()
                reruns += view.reruns
            # The parent may end before children it no longer waits for.
            again = Runtime(FaultyStore(inner, None), time_skipping=True)
            try:
                for header in inner.list_instances(status=UNFINISHED, limit=1_000_000):
                    with contextlib.suppress(WorkflowFailed):
                        again.wait(header.instance_id, timeout=60)
            finally:
                again.close()
            break
        else:
            raise AssertionError("still running after 20 runtimes")
        outcome = collect(inner, case)
    finally:
        inner.close()
    outcome.reruns = reruns
    if plan is not None:
        outcome.kills = plan.kills
        outcome.duplicated = plan.duplicated
    return outcome
