"""Crash schedules through the AWS loop: the Lambdas' work on DynamoDB (moto), a simulated state machine.

:func:`drive_aws` runs a case the way the stack does. What runs is durable's
own code: :func:`~durable.runtime.aws_loop.orchestrate` and
:func:`~durable.runtime.aws_loop.answer_task` (the orchestrator Lambda's work),
:func:`~durable.runtime.aws_loop.run_referenced_attempt` (the activity
Lambda's), the reply handling of :class:`~durable.runtime.aws_dispatch.LambdaDispatcher`,
:func:`~durable.runtime.aws_config.wake_handle` / ``wake_with`` and the real
:class:`~durable.store.dynamodb.DynamoDBStore` on a moto table, with its
``park`` and its wake-ups. Only the AWS boundary is simulated:

* Step Functions: a small interpreter of ``infra/statemachine.asl.json`` (read
  from the file: Pass with ``Parameters`` and the intrinsics it uses, Choice,
  Wait, Task with ``Retry``/``Catch``/``ResultPath``/``TimeoutSecondsPath``,
  Succeed, Fail; anything else in the definition is refused), one execution
  per instance and generation, named as ``StartExecution`` names them (a second
  start with a name is ``ExecutionAlreadyExists``). An ``Orchestrate`` task
  gets a token and waits for it to be answered (``SendTaskSuccess`` /
  ``SendTaskFailure`` through :class:`FakeStepFunctions`), for its
  invocation to fail (a dead orchestrator: ``States.ALL``, ``PrepareRecovery``)
  or for its timeout (``States.Timeout``: ``TimerDue``); an answer to a token
  that is no longer waiting raises ``InvalidToken`` / ``TaskTimedOut``.
* Lambda: :class:`FakeLambda` is the ``invoke`` API. The orchestrator's
  handler glue (``aws.orchestrator_handler``: orchestrate, answer the task,
  again on ``mail``) is mirrored by :meth:`_Cloud.orchestrator_lambda` with a
  :class:`_Answers` (``TaskAnswers``) on the fake clients and a
  :class:`_Dispatcher`, the real ``LambdaDispatcher`` making its invocations
  one after the other (deterministic) instead of on a thread pool. The
  activity handler (``aws.activity_handler``) is mirrored by
  :meth:`_Cloud.activity_lambda`. A synchronous invocation that dies answers
  with a function error (the dispatcher records ``ActivityCrashed``); one
  that runs past ``reply_by`` raises ``ReadTimeoutError`` and posts its outcome
  itself later. Asynchronous events (``InvocationType: Event``) are queued;
  a failed one is tried up to 3 times (Lambda's retries), then dropped.

Time is virtual and moves only when nothing else can happen: Lambdas take
none, a ``Wait`` with ``SecondsPath`` (``Sleep``, a timer) and a task timeout
take theirs, a fixed ``Seconds`` wait (``RecoveryBackoff``) and the
``Retry`` intervals take none, so that a crashed run stays comparable with the
uninterrupted one event for event. Queued asynchronous invocations run first
in first out (a retried one at once); once one of them ran, all of them run
before any execution moves on, so the results of one round of activities
arrive together, as in the uninterrupted run (where the orchestrator waits
for them all). Before they begin, an execution may move first (activities
take time): it parks, and its park may race their posts (they post just
before it, which refuses it: ``mail``, or just after, which wakes it). An
execution that runs longer than a year is ended (``TIMED_OUT``), as Step
Functions ends it.

Faults, from a seeded :class:`AwsFaultPlan` (kills, at most 7 a schedule:
``GiveUp`` is at 8 failures in a row; a schedule may keep one for a rarely
passed boundary, its ``focus``), every Lambda invocation with its own
:class:`AwsFaultyStore` view (one process):

* the orchestrator dies before or after ``load``, ``commit``, ``post``,
  ``park``, ``history`` (so before or after its commits), after its
  synchronous activity calls came back (``dispatch.after``: their outcomes,
  never posted, are lost), while starting asynchronous invocations
  (``start``), before or after answering its token (``answer.before``,
  ``answer.after``), or its response is lost after its work
  (``orchestrate.response``); its invocation is throttled (retried by the
  task's ``Retry``); its time runs short after some steps (the loop hands back
  with ``continue``, or starts the round asynchronously);
* an activity dies before or after reading its attempt, after running it
  (``activity.reply``: a synchronous call then fails, ``ActivityCrashed``),
  before or after posting; results are posted twice (the plan's duplicates)
  and asynchronous events delivered twice;
* a round of synchronous calls runs past ``reply_by`` (each posts itself);
  an attempt's invocation is lost (dropped, or dead with no retry left): the
  loop finds it after ``LOST_AFTER_SECONDS`` and dispatches it again;
* a park races the posts it waits for (refused: ``mail``; or woken at once);
  ``SendTaskSuccess`` fails for a waker (the token is put back, the API
  client's retry wakes the loop); the hand-over's ``StartExecution`` loses its
  response (retried: ``ExecutionAlreadyExists``, caught); the hand-over
  threshold is low, so executions hand over to successors; ``INLINE_SECONDS``
  is 0 in some schedules (every round asynchronous).

What a crash changes that an uninterrupted run cannot know is given to the
uninterrupted run a schedule is compared with: the attempts whose synchronous
invocation died (recorded ``ActivityCrashed``, found in the histories) and the
attempts that were lost (no invocation of them answers before their
``LOST_AFTER_SECONDS`` are up: those the crashed run lost, found by the
driver). A crashed run is then compared with that run task by task
(:func:`by_task`): what each task went through, event for event, is the same;
only results of different tasks may be recorded in another order (a local
activity whose result a crash lost runs again in a later step), so an
activity the workflow stopped waiting for may have its outcome recorded in
one run only. Every execution must end in ``Finished``, ``WorkflowFailed``
or ``HandedOver``, the last one of each instance as its status says.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ReadTimeoutError

from durable.codec import encode
from durable.decision import ActivityWork, Decision
from durable.history import (
    ActivityFailed,
    ActivityRedispatched,
    ActivityResult,
    ActivityRetryScheduled,
    ActivityScheduled,
    Event,
    EventMessage,
    Message,
    Status,
    message_to_json,
)
from durable.runtime.aws import _instant, _task_expiry
from durable.runtime.aws_config import execution_input, name_root, wake_handle, wake_with
from durable.runtime.aws_dispatch import LambdaDispatcher
from durable.runtime.aws_loop import (
    FAN_IN_SECONDS,
    HAND_OVER_EVENTS,
    INLINE_SECONDS,
    LOST_AFTER_SECONDS,
    ActivityRef,
    LoopDecision,
    Observer,
    attempt_from_carried,
    orchestrate,
    orchestrate_and_answer,
    run_referenced_attempt,
)
from durable.runtime.start import create_instance, encode_input
from durable.runtime.step import LiveRuns
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
    recorded_outcome,
    without_redispatches,
)

DEFINITION = Path(__file__).resolve().parents[2] / "infra" / "statemachine.asl.json"
STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:durable-loop"
ORCHESTRATOR_ARN = "${OrchestratorFunction.Arn}"
MAX_ROUNDS = 2000
"""Moves (invocations, tasks, posts, timeouts) a schedule may take; they take at most ~60."""
EXECUTION_LIMIT = timedelta(days=365)
"""Step Functions ends a standard execution that runs longer (``TIMED_OUT``)."""
ASYNC_TRIES = 3
"""Lambda runs an asynchronous event at most this often when the function fails."""
LAMBDA_SECONDS = 900.0
"""The orchestrator Lambda's time (virtual time does not move while it runs)."""
SHORT_TIME = 0.25
"""Chance that an orchestrator's time runs short (after a drawn number of looks at it)."""
NO_INLINE = 0.4
"""Chance that a schedule runs with ``INLINE_SECONDS`` 0 (every round asynchronous)."""
SLOW_ROUND = 0.15
"""Chance that every call of a synchronous round runs past ``reply_by``."""
LOSE = 0.03
"""Chance that the first invocation of an attempt is dropped (Lambda lost the event)."""
DUPLICATE_EVENT = 0.1
"""Chance that an asynchronous event is delivered again (at least once)."""
RACE = 0.6
"""Chance that the queued invocations post just before a park or just after it."""
FIRST = 0.4
"""Chance that an execution moves before the queued invocations have begun to run
(activities take time): it parks, or meets their posts while parking."""
THROTTLED = 0.03
"""Chance that an orchestrator invocation is throttled (the task's ``Retry`` invokes again)."""
WAKE_FAILS = 0.3
"""Chance that ``SendTaskSuccess`` fails for the waker of an event the API posts."""
CRASH_REPLY = {
    "errorType": "Runtime.ExitError",
    "errorMessage": "Runtime exited with error: signal: killed",
}
"""What Lambda answers a synchronous invocation whose sandbox died."""

Key = tuple[str, int, int, int]
"""An attempt: (instance, run, task id, attempt)."""


def _key(ref: ActivityRef) -> Key:
    return (ref.instance_id, ref.run, ref.task_id, ref.attempt)


# ----------------------------------------------------------------------------- the store


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

    def die_here(self, boundary: str) -> None:
        """A kill at a point of the Lambda's own code (between its calls to the store)."""
        self._maybe_kill(boundary)


class _PostLog:
    """The table as the Lambdas reach it, noting which attempts had a result posted."""

    def __init__(self, inner: DynamoDBStore, posted: set[Key]) -> None:
        self._inner = inner
        self._posted = posted

    def post(self, instance_id: str, message: Message) -> bool:
        accepted = self._inner.post(instance_id, message)
        if isinstance(message, ActivityResult):
            self._posted.add((instance_id, message.run, message.task_id, message.attempt))
        return accepted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SimClock:
    """Virtual time, moved by the simulated state machine only."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def wall(self) -> float:
        """``time.time()`` in virtual time (epoch seconds)."""
        return self.at.timestamp()


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


FOCUS = (
    "park.before",
    "park.after",
    "post.before",
    "post.after",
    "dispatch.after",
    "start",
    "activity.reply",
    "answer.before",
    "answer.after",
    "orchestrate.response",
    "handover.response",
)
"""Boundaries passed rarely (or only in some loops): a schedule may kill at one of them
more often, so that a default run covers them all."""
FOCUS_RATE = 0.8


class AwsFaultPlan(FaultPlan):
    """A :class:`FaultPlan` with a ``focus`` boundary (or none): one kill of the budget is kept
    for it, and it kills there at ``FOCUS_RATE`` or the plan's rate if higher."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, budget=FaultPlan(seed).budget % 7 + 1)
        self.focus = self.rng.choice([*FOCUS, None, None, None])

    def kill(self, boundary: str) -> bool:
        if self.focus is None or self.focus in self.kills:
            return super().kill(boundary)
        if boundary != self.focus:
            return len(self.kills) < self.budget - 1 and super().kill(boundary)
        if self.rng.random() >= max(self.rate, FOCUS_RATE):
            return False
        self.kills.append(boundary)
        return True


def aws_plan(seed: int) -> AwsFaultPlan:
    """The crash schedule of ``seed`` on the AWS loop: at most 7 kills (``GiveUp`` is at 8)."""
    return AwsFaultPlan(seed)


# ----------------------------------------------------------------------------- Step Functions


class TaskTimedOut(Exception):
    """``SendTask*`` for a task that timed out."""


class InvalidToken(Exception):
    """``SendTask*`` for a token that is not waiting (answered, failed, or unknown)."""


class TaskDoesNotExist(Exception):
    """``SendTask*`` for a task of an execution that ended."""


class Throttled(Exception):
    """A transient error of an AWS API call (injected)."""


class TaskFailed(Exception):
    """A task's work failed with the ASL error ``error`` (an invocation, a service call)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


@dataclass
class Execution:
    """One execution of the state machine."""

    name: str
    state: str
    data: dict[str, Any]
    status: str = "RUNNING"
    end: str | None = None
    """The state it ended in (``Finished``, ``WorkflowFailed``, ``HandedOver``, ...)."""
    token: str | None = None
    """The token of the task it waits in."""
    due: datetime | None = None
    """When its Wait ends, or its task times out."""
    retries: Counter[int] = field(default_factory=Counter)
    """Retries taken per retrier of the current task."""
    instance_id: str = ""
    generation: int = 0
    started: datetime = EPOCH
    woken: bool = False
    """Its task was answered by a poster's wake-up (not by its orchestrator)."""

    def __post_init__(self) -> None:
        self.instance_id = str(self.data["instance_id"])
        self.generation = int(self.data["generation"])


_STATE_KEYS = {
    "Pass": {"Type", "Comment", "Parameters", "Next"},
    "Choice": {"Type", "Comment", "Choices", "Default"},
    "Wait": {"Type", "Comment", "Seconds", "SecondsPath", "Next"},
    "Task": {
        "Type",
        "Comment",
        "Resource",
        "Parameters",
        "TimeoutSecondsPath",
        "ResultPath",
        "Retry",
        "Catch",
        "Next",
    },
    "Succeed": {"Type", "Comment"},
    "Fail": {"Type", "Comment", "Error", "Cause"},
}
_INTRINSIC = re.compile(r"States\.(\w+)\((.*)\)")
_ARGUMENT = re.compile(r"\s*('(?:[^'\\]|\\.)*'|[^,]+)\s*(?:,|$)")


def load_definition(path: Path = DEFINITION) -> dict[str, Any]:
    """The state machine definition; refuses what :class:`StateMachine` does not interpret."""
    definition: dict[str, Any] = json.loads(path.read_text())
    for name, state in definition["States"].items():
        allowed = _STATE_KEYS.get(state["Type"])
        assert allowed is not None, f"state {name}: type {state['Type']} not interpreted"
        unknown = set(state) - allowed
        assert not unknown, f"state {name}: {sorted(unknown)} not interpreted"
    return definition


def _path(expression: str, data: Any, context: dict[str, Any]) -> Any:
    """A reference path (``$.a.b``, ``$$.Task.Token``) or an intrinsic function's value."""
    found = _INTRINSIC.fullmatch(expression)
    if found is not None:
        args = [_argument(a, data, context) for a in _ARGUMENT.findall(found.group(2))]
        if found.group(1) == "MathAdd":
            return int(args[0]) + int(args[1])
        if found.group(1) == "Format":
            parts = str(args[0]).split("{}")
            assert len(parts) == len(args), expression
            return parts[0] + "".join(str(a) + p for a, p in zip(args[1:], parts[1:], strict=True))
        raise AssertionError(f"intrinsic {found.group(1)} not interpreted")
    if expression.startswith("$$"):
        value: Any = context
        steps = expression[2:]
    else:
        assert expression.startswith("$"), expression
        value = data
        steps = expression[1:]
    for step in filter(None, steps.split(".")):
        value = value[step]
    return value


def _argument(text: str, data: Any, context: dict[str, Any]) -> Any:
    text = text.strip()
    if text.startswith("'"):
        return text[1:-1].replace("\\'", "'")
    if text.startswith("$"):
        return _path(text, data, context)
    return json.loads(text)


def _parameters(template: Any, data: Any, context: dict[str, Any]) -> Any:
    if not isinstance(template, dict):
        return template
    out: dict[str, Any] = {}
    for key, value in template.items():
        if key.endswith(".$"):
            out[key[:-2]] = _path(value, data, context)
        else:
            out[key] = _parameters(value, data, context)
    return out


def _with_result(data: dict[str, Any], result_path: str | None, result: Any) -> dict[str, Any]:
    if result_path is None:
        return data
    if result_path == "$":
        return dict(result)
    steps = result_path.removeprefix("$.").split(".")
    out: dict[str, Any] = json.loads(json.dumps(data))
    target = out
    for step in steps[:-1]:
        target = target.setdefault(step, {})
    target[steps[-1]] = result
    return out


def _matches(error: str, names: Sequence[str]) -> bool:
    return error in names or "States.ALL" in names


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class StateMachine:
    """The loop's executions, interpreted from the definition (see the module docstring).

    ``orchestrator`` is the Lambda an ``Orchestrate`` task invokes with its
    payload; it raises :class:`TaskFailed` when the invocation failed.
    """

    def __init__(
        self,
        definition: dict[str, Any],
        clock: SimClock,
        path: Counter[str],
        orchestrator: Callable[[dict[str, Any]], None],
        kill: Callable[[str], bool],
    ) -> None:
        self.states: dict[str, dict[str, Any]] = definition["States"]
        self.start_at: str = definition["StartAt"]
        self.clock = clock
        self.path = path
        self.orchestrator = orchestrator
        self.kill = kill
        self.executions: dict[str, Execution] = {}
        self.runnable: deque[Execution] = deque()
        self.waiting: dict[str, Execution] = {}
        """Tokens of tasks waiting to be answered."""
        self.dead: dict[str, str] = {}
        """Tokens no longer waiting: ``timed out`` or ``done``."""
        self._tokens = itertools.count(1)

    # ------------------------------------------------------------------ API

    def start_execution(self, name: str, data: dict[str, Any]) -> bool:
        """``StartExecution``: False when an execution of that name exists (ended or not)."""
        if name in self.executions:
            return False
        execution = Execution(name, self.start_at, data, started=self.clock.now())
        self.executions[name] = execution
        self._enter(execution, self.start_at, data)
        return True

    def answer(
        self,
        token: str,
        *,
        output: Any = None,
        error: str | None = None,
        cause: str = "",
        woken: bool = False,
    ) -> None:
        """``SendTaskSuccess`` (``output``) or ``SendTaskFailure`` (``error``); ``woken``:
        by a poster waking a parked loop."""
        execution = self.waiting.pop(token, None)
        if execution is None:
            if self.dead.get(token) == "timed out":
                raise TaskTimedOut(token)
            raise InvalidToken(token)
        self._close_token(execution, "done")
        execution.woken = woken
        if error is None:
            self._succeeded(execution, output)
        else:
            self._failed(execution, error, cause)

    # ------------------------------------------------------------------ running

    def advance(self, execution: Execution) -> None:
        """Run the task ``execution`` is queued in."""
        state = self.states[execution.state]
        resource = str(state["Resource"])
        if resource.endswith(":lambda:invoke.waitForTaskToken"):
            self._invoke_for_token(execution, state)
        elif resource.endswith(":states:startExecution"):
            params = _parameters(
                state["Parameters"], execution.data, {"StateMachine": {"Id": STATE_MACHINE_ARN}}
            )
            assert params["StateMachineArn"] == STATE_MACHINE_ARN, params
            if not self.start_execution(str(params["Name"]), dict(params["Input"])):
                self.path["start: already exists"] += 1
                self._failed(execution, "StepFunctions.ExecutionAlreadyExistsException", "")
            elif self.kill("handover.response"):
                self._failed(execution, "StepFunctions.SdkClientException", "response lost")
            else:
                self._succeeded(execution, {})
        else:
            raise AssertionError(f"task resource {resource} not interpreted")

    def _invoke_for_token(self, execution: Execution, state: dict[str, Any]) -> None:
        token = f"{execution.name}#{next(self._tokens)}"
        entered = self.clock.now()
        payload = _parameters(
            state["Parameters"],
            execution.data,
            {
                "Task": {"Token": token},
                "State": {"EnteredTime": _iso(entered)},
                "Execution": {"StartTime": _iso(execution.started)},
            },
        )
        assert payload["FunctionName"] == ORCHESTRATOR_ARN, payload
        timeout = int(_path(state["TimeoutSecondsPath"], execution.data, {}))
        execution.token = token
        execution.due = entered + timedelta(seconds=timeout)
        self.waiting[token] = execution
        try:
            self.orchestrator(dict(payload["Payload"]))
        except TaskFailed as exc:
            if self.waiting.get(token) is execution:  # not answered before it failed
                del self.waiting[token]
                self._close_token(execution, "done")
                self._failed(execution, exc.error, exc.cause)
            else:
                self.path["invocation failed after its answer"] += 1

    def timeouts(self) -> bool:
        """Move virtual time to the next Wait's end, task timeout or execution time limit;
        False if none."""
        waiting = [
            e for e in self.executions.values() if e.status == "RUNNING" and e.due is not None
        ]
        if not waiting:
            return False
        due = min(min(e.due, e.started + EXECUTION_LIMIT) for e in waiting if e.due is not None)
        self.clock.at = max(self.clock.at, due)
        for execution in waiting:
            if execution.started + EXECUTION_LIMIT <= self.clock.at:
                if execution.token is not None:
                    del self.waiting[execution.token]
                    self._close_token(execution, "timed out")
                execution.status, execution.end = "TIMED_OUT", "ExecutionTimedOut"
                execution.due = None
                continue
            if execution.due is None or execution.due > self.clock.at:
                continue
            execution.due = None
            if execution.token is not None:
                token = execution.token
                del self.waiting[token]
                self._close_token(execution, "timed out")
                self._failed(execution, "States.Timeout", "")
            else:
                self._enter(execution, str(self.states[execution.state]["Next"]), execution.data)
        return True

    # ------------------------------------------------------------------ transitions

    def _close_token(self, execution: Execution, how: str) -> None:
        assert execution.token is not None
        self.dead[execution.token] = how
        execution.token = None
        execution.due = None

    def _succeeded(self, execution: Execution, result: Any) -> None:
        state = self.states[execution.state]
        data = _with_result(execution.data, state.get("ResultPath", "$"), result)
        self._enter(execution, str(state["Next"]), data)

    def _failed(self, execution: Execution, error: str, cause: str) -> None:
        state = self.states[execution.state]
        for i, retrier in enumerate(state.get("Retry", [])):
            if _matches(error, retrier["ErrorEquals"]):
                if execution.retries[i] < int(retrier.get("MaxAttempts", 3)):
                    execution.retries[i] += 1
                    self.path[f"retry {error}"] += 1
                    self.runnable.append(execution)  # Retry intervals take no virtual time
                    return
                break
        for catcher in state.get("Catch", []):
            if _matches(error, catcher["ErrorEquals"]):
                result = {"Error": error, "Cause": cause}
                data = _with_result(execution.data, catcher.get("ResultPath", "$"), result)
                self._enter(execution, str(catcher["Next"]), data)
                return
        execution.status, execution.end = "FAILED", f"{execution.state}: {error}"

    def _enter(self, execution: Execution, name: str, data: dict[str, Any]) -> None:
        """Go through states until one waits (a Task queued, a Wait with time) or ends."""
        while True:
            execution.state, execution.data, execution.due = name, data, None
            execution.retries.clear()
            self.path[f"> {name}"] += 1
            state = self.states[name]
            kind = state["Type"]
            if kind == "Pass":
                if "Parameters" in state:
                    data = _parameters(state["Parameters"], data, {})
                name = str(state["Next"])
            elif kind == "Choice":
                name = self._choose(state, data)
            elif kind == "Wait":
                seconds = 0
                if "SecondsPath" in state:  # a timer's wait; a fixed one (a backoff) takes none
                    seconds = int(_path(state["SecondsPath"], data, {}))
                # A woken loop's fan-in wait only lets posts gather: it takes no virtual time,
                # or a crashed run's timers would be stamped later than the uninterrupted run's.
                if execution.woken and 0 < seconds <= FAN_IN_SECONDS:
                    self.path["fan-in wait"] += 1
                    seconds = 0
                execution.woken = False
                if seconds > 0:
                    execution.due = self.clock.now() + timedelta(seconds=seconds)
                    return
                name = str(state["Next"])
            elif kind == "Task":
                self.runnable.append(execution)
                return
            elif kind == "Succeed":
                execution.status, execution.end = "SUCCEEDED", name
                return
            else:  # Fail
                execution.status, execution.end = "FAILED", name
                return

    @staticmethod
    def _choose(state: dict[str, Any], data: dict[str, Any]) -> str:
        for rule in state["Choices"]:
            value = _path(rule["Variable"], data, {})
            if set(rule) != {"Variable", "NumericGreaterThanEquals", "Next"}:
                raise AssertionError(f"choice rule {rule} not interpreted")
            if value >= rule["NumericGreaterThanEquals"]:
                return str(rule["Next"])
        return str(state["Default"])


class _SfnExceptions:
    TaskTimedOut = TaskTimedOut
    InvalidToken = InvalidToken
    TaskDoesNotExist = TaskDoesNotExist


class FakeStepFunctions:
    """The Step Functions API as the Lambdas call it: ``SendTaskSuccess``, ``SendTaskFailure``."""

    exceptions = _SfnExceptions

    def __init__(self, machine: StateMachine, path: Counter[str]) -> None:
        self.machine = machine
        self.path = path
        self.fail_next = False
        """The next ``SendTaskSuccess`` fails (a throttled API call)."""
        self.waking = False

    def send_task_success(self, *, taskToken: str, output: str) -> dict[str, Any]:
        if self.fail_next:
            self.fail_next = False
            raise Throttled("Rate exceeded")
        try:
            self.machine.answer(taskToken, output=json.loads(output), woken=self.waking)
        except (TaskTimedOut, InvalidToken):
            if self.waking:
                self.path["stale wake"] += 1
            raise
        if self.waking:
            self.path["woken"] += 1
        return {}

    def send_task_failure(self, *, taskToken: str, error: str, cause: str = "") -> dict[str, Any]:
        self.machine.answer(taskToken, error=error, cause=cause)
        return {}


# ----------------------------------------------------------------------------- Lambda


@dataclass(frozen=True)
class _Event:
    """An asynchronous invocation of the activity Lambda, or a late synchronous one."""

    payload: dict[str, Any]
    late: bool = False
    """A synchronous invocation that ran past ``reply_by``: it posts its outcome itself."""
    tries: int = 0
    again: bool = False
    """A second delivery of the same event."""


class FakeLambda:
    """The Lambda ``Invoke`` API as the orchestrator calls it (its view dies with it)."""

    def __init__(self, cloud: _Cloud, view: AwsFaultyStore) -> None:
        self.cloud = cloud
        self.view = view

    def invoke(
        self, *, FunctionName: str, Payload: bytes, InvocationType: str = "RequestResponse"
    ) -> dict[str, Any]:
        assert FunctionName == "activity", FunctionName
        payload = json.loads(Payload)
        if InvocationType == "Event":
            self.view.die_here("start")  # the orchestrator dies before this invocation
            self.cloud.events.append(_Event(payload))
            self.cloud.path["started async"] += 1
            return {"StatusCode": 202}
        assert InvocationType == "RequestResponse", InvocationType
        return self.cloud.call_activity(payload)


class _Dispatcher(LambdaDispatcher):
    """The real dispatcher, its invocations made one after the other on :class:`FakeLambda`."""

    def __init__(self, cloud: _Cloud, view: AwsFaultyStore) -> None:
        client = FakeLambda(cloud, view)
        super().__init__(client, client, "activity", cloud.clock, wall=cloud.clock.wall)
        self.cloud = cloud
        self.view = view

    def call(self, works: Sequence[ActivityWork], seconds: float) -> list[ActivityResult | None]:
        self.cloud.path["sync rounds"] += 1
        self.cloud.slow_round = self.cloud.draw(SLOW_ROUND)
        if self.cloud.slow_round:
            self.cloud.path["slow rounds"] += 1
        try:
            reply_by = self._wall() + seconds
            answers = [self._call_one(work, reply_by) for work in works]
        finally:
            self.cloud.slow_round = False
        self.view.die_here("dispatch.after")  # the outcomes came back to a dying orchestrator
        return answers

    def start(self, refs: Sequence[ActivityRef]) -> None:
        for ref in refs:
            self._start_one(ref)


class _Answers:
    """How the simulated orchestrator answers its task (``TaskAnswers``, as ``aws._TaskAnswers``)."""

    def __init__(
        self,
        cloud: _Cloud,
        view: AwsFaultyStore,
        dispatcher: _Dispatcher,
        instance_id: str,
        token: str,
        expiry: float | None,
    ) -> None:
        self.cloud, self.view, self.dispatcher = cloud, view, dispatcher
        self.instance_id, self.token, self.expiry = instance_id, token, expiry

    def _send(self, call: Callable[[], object]) -> None:
        self.view.die_here("answer.before")
        try:
            call()
        except (TaskTimedOut, InvalidToken):
            self.cloud.path["answer to a dead token"] += 1
        self.view.die_here("answer.after")

    def succeed(self, output: dict[str, Any]) -> None:
        sfn = self.cloud.sfn
        self._send(lambda: sfn.send_task_success(taskToken=self.token, output=json.dumps(output)))

    def fail(self, error: str, cause: str) -> None:
        sfn = self.cloud.sfn
        self._send(lambda: sfn.send_task_failure(taskToken=self.token, error=error, cause=cause))

    def start(self, refs: Sequence[ActivityRef]) -> None:
        self.dispatcher.start(refs)

    def park(self, output: dict[str, Any]) -> bool:
        handle = wake_handle(self.token, output, deadline=self.expiry)
        race = self.cloud.race() if self.cloud.events else None
        if race == "before":
            self.cloud.path["race: posts before the park"] += 1
            self.cloud.run_events()
        parked = self.view.park(self.instance_id, handle)
        self.cloud.path["parked" if parked else "park refused"] += 1
        if race == "after" and parked:
            self.cloud.path["race: posts after the park"] += 1
            self.cloud.run_events()
        return parked

    def seconds_left(self) -> float | None:
        return None if self.expiry is None else self.expiry - self.cloud.clock.wall()


class _Cloud:
    """The simulated AWS side: Lambdas, the Lambda service's queues, Step Functions, faults."""

    def __init__(
        self,
        table: str,
        tables: Tables,
        plan: FaultPlan | None,
        crashed: frozenset[Key],
        lost: frozenset[Key],
    ) -> None:
        self.plan = plan
        self.clock = SimClock(EPOCH)
        self.path: Counter[str] = Counter()
        self.machine = StateMachine(
            load_definition(), self.clock, self.path, self.orchestrator_lambda, self.kill
        )
        self.sfn = FakeStepFunctions(self.machine, self.path)
        self.inner = DynamoDBStore(table, client=tables.client, waker=self.wake)
        self.posted: set[Key] = set()
        self.table = _PostLog(self.inner, self.posted)
        self.events: deque[_Event] = deque()
        self.events_begun = False
        """Some queued invocations ran: the rest run before any execution moves."""
        self.crashed = crashed
        self.lost: set[Key] = set(lost)
        self.lost_until: dict[Key, datetime] = {}
        self.invoked: set[Key] = set()
        self.slow_round = False
        self.live_runs = LiveRuns(capacity=100)
        """The generators a warm orchestrator keeps (lost when it dies)."""
        self.waiting_on: dict[str, list[str]] = {}
        self.reruns: list[str] = []
        self.hand_over_events = HAND_OVER_EVENTS
        self.inline_seconds = INLINE_SECONDS
        if plan is not None:
            self.hand_over_events = plan.rng.choice([HAND_OVER_EVENTS, HAND_OVER_EVENTS, 60, 100])
            if plan.rng.random() < NO_INLINE:
                self.inline_seconds = 0.0
            focus = getattr(plan, "focus", None)  # the loop that passes it often
            if focus == "handover.response":
                self.hand_over_events = 40  # two iterations (20 events each) per execution
            elif focus in ("park.before", "park.after", "post.before", "post.after", "start"):
                self.inline_seconds = 0.0
            elif focus in ("dispatch.after", "activity.reply"):
                self.inline_seconds = INLINE_SECONDS

    # ------------------------------------------------------------------ plumbing

    def draw(self, chance: float) -> bool:
        return self.plan is not None and self.plan.rng.random() < chance

    def kill(self, boundary: str) -> bool:
        return self.plan is not None and self.plan.kill(boundary)

    def race(self) -> str | None:
        """Whether the queued invocations post just before a park, just after it, or later."""
        if self.plan is None or self.plan.rng.random() >= RACE:
            return None
        return self.plan.rng.choice(["before", "after"])

    def view(self, *, can_die: bool = True) -> AwsFaultyStore:
        return AwsFaultyStore(self.table, self.plan if can_die else None)

    def done_with(self, view: FaultyStore) -> None:
        self.reruns += view.reruns

    def wake(self, handle: str) -> None:
        """The store's waker: ``wake_with`` on the Step Functions API (virtual time)."""
        self.sfn.waking = True
        try:
            wake_with(self.sfn, handle, wall=self.clock.wall)
        finally:
            self.sfn.waking = False

    def start_loop(self, instance_id: str, generation: int = 0) -> None:
        """``StartExecution`` as the API and the orchestrator do it (idempotent by name)."""
        data = execution_input(instance_id, generation)
        self.machine.start_execution(f"{name_root(instance_id)}-{generation}", data)

    def on_step(self, decision: Decision, ms: float) -> None:
        assert decision.status != Status.STUCK, f"{decision.instance_id} stuck: {decision.error}"
        self.waiting_on[decision.instance_id] = decision.waiting_on

    def start_children(self, ids: Sequence[str]) -> None:
        for child_id in ids:
            self.start_loop(child_id)

    def api_post(self, instance_id: str, message: EventMessage) -> None:
        """The API posts an event; its client tries again when the call fails."""
        self.sfn.fail_next = self.draw(WAKE_FAILS)
        try:
            self.table.post(instance_id, message)
        except Throttled:
            self.path["wake failed: posted again"] += 1
            self.table.post(instance_id, message)  # a redelivery: the token is taken again
        self.sfn.fail_next = False

    # ------------------------------------------------------------------ the orchestrator

    def orchestrator_lambda(self, event: dict[str, Any]) -> None:
        """One invocation of the orchestrator Lambda; :class:`TaskFailed` if it failed."""
        if self.draw(THROTTLED):
            self.path["throttled"] += 1
            raise TaskFailed("Lambda.TooManyRequestsException", "Rate exceeded")
        view = self.view()
        try:
            self._orchestrator_handler(view, event)
            view.die_here("orchestrate.response")  # the sandbox dies on the way back
        except Crash as exc:
            self.live_runs.clear()  # a new sandbox keeps nothing
            raise TaskFailed("Runtime.ExitError", str(exc)) from None
        finally:
            self.done_with(view)

    def _time(self) -> _LambdaTime:
        """The Lambda's remaining time: enough, or short after a drawn number of steps."""
        if not self.draw(SHORT_TIME):
            return _LambdaTime(None)
        assert self.plan is not None
        self.path["time runs short"] += 1
        return _LambdaTime(self.plan.rng.choice([0, 1, 2, 3, 5]))

    def _orchestrator_handler(self, view: AwsFaultyStore, event: dict[str, Any]) -> None:
        """``aws.orchestrator_handler`` without its Lambda plumbing (logs, metrics, clients)."""
        instance_id = str(event["instance_id"])
        token = str(event["token"])
        expiry = _task_expiry(event)
        started = _instant(event.get("started"))
        lambda_time = self._time()

        def time_left() -> float:
            left = lambda_time.left()
            return left if expiry is None else min(left, expiry - self.clock.wall())

        def on_step(decision: Decision, ms: float) -> None:
            self.on_step(decision, ms)
            lambda_time.worked()

        dispatcher = _Dispatcher(self, view)
        answers = _Answers(self, view, dispatcher, instance_id, token, expiry)

        def decide(recover: bool, events: int) -> LoopDecision:
            return orchestrate(
                view,
                instance_id,
                resolve=_resolve,
                clock=self.clock,
                time_left=time_left,
                recover=recover,
                events=events,
                hand_over_events=self.hand_over_events,
                lost_after=LOST_AFTER_SECONDS,
                observer=Observer(on_step=on_step, start_children=self.start_children),
                live_runs=self.live_runs,
                dispatcher=dispatcher if self.inline_seconds > 0 else None,
                inline_seconds=self.inline_seconds,
                started=started,
            )

        answered: list[str] = []

        def on_answer(decision: LoopDecision, done: str) -> None:
            answered.append(done)
            self.path[f"answer {done}"] += 1

        _, done_all = orchestrate_and_answer(
            decide,
            answers,
            recover=bool(event.get("recover", False)),
            events=int(event.get("events", 0)),
            time_left=time_left,
            on_answer=on_answer,
        )
        if len(done_all) > len(answered):  # time ran low after mail: answered to go on
            self.path["answer continue"] += 1

    # ------------------------------------------------------------------ the activity Lambda

    def activity_lambda(self, view: AwsFaultyStore, event: dict[str, Any], *, late: bool) -> Any:
        """``aws.activity_handler`` without its Lambda plumbing; raises Crash when it dies.

        ``late``: invoked synchronously, it ran past ``reply_by`` (posts its outcome).
        """
        ref = ActivityRef.parse(event)
        crash = event.get("crash")
        waited_for = isinstance(event.get("reply_by"), int | float)
        carried = event.get("work")
        result = run_referenced_attempt(
            view,
            ref,
            self.clock,
            limit=None,
            crash=crash if isinstance(crash, dict) else None,
            post=not waited_for,
            work=attempt_from_carried(ref, carried) if waited_for and carried is not None else None,
        )
        if result is None:
            return {"status": "skipped"}
        status = "failed" if result.error is not None else "completed"
        if waited_for:
            if not late:
                view.die_here("activity.reply")  # it ran; the sandbox dies before answering
                return {"status": status, "outcome": message_to_json(result)}
            view.post(ref.instance_id, result)  # the orchestrator stopped waiting
        return {"status": status}

    def call_activity(self, event: dict[str, Any]) -> dict[str, Any]:
        """A synchronous invocation: its reply, or ``ReadTimeoutError`` past ``reply_by``."""
        key = _key(ActivityRef.parse(event))
        if self._dropped(key, first_draw=True):
            self.path["sync call lost"] += 1
            raise ReadTimeoutError(endpoint_url="https://lambda.sim")
        if self.slow_round:
            self.events.append(_Event(event, late=True))
            raise ReadTimeoutError(endpoint_url="https://lambda.sim")
        if key in self.crashed:  # the uninterrupted run: this attempt's sandbox died
            return _function_error()
        view = self.view(can_die=key not in self.lost)
        try:
            reply = self.activity_lambda(view, event, late=False)
        except Crash:
            self.path["sync call died"] += 1
            return _function_error()
        finally:
            self.done_with(view)
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(reply).encode())}

    def run_events(self) -> None:
        while self.events:
            self.run_event()

    def execution_first(self) -> bool:
        """Whether an execution moves before the queued invocations (none of which ran yet)."""
        if not self.events:
            self.events_begun = False
            return True
        return not self.events_begun and self.draw(FIRST)

    def run_event(self) -> None:
        """The next queued invocation (first in, first out; Lambda retries a failed one at once)."""
        event = self.events.popleft()
        self.events_begun = bool(self.events)
        key = _key(ActivityRef.parse(event.payload))
        if self._dropped(key, first_draw=not event.late and not event.again):
            self.path["late call lost" if event.late else "async event lost"] += 1
            return
        view = self.view(can_die=key not in self.lost)
        # A late synchronous invocation began when it was called (only its end is modelled
        # here): a run dispatched meanwhile (recovery) may have recorded an outcome since.
        view.started_before_outcome = event.late
        try:
            self.activity_lambda(view, event.payload, late=event.late)
        except Crash:
            if not event.late and event.tries + 1 < ASYNC_TRIES:
                self.path["async retry"] += 1
                self.events.appendleft(replace(event, tries=event.tries + 1))
            else:  # no retry left
                self._lose_if_silent(key)
        else:
            if not event.late and not event.again and self.draw(DUPLICATE_EVENT):
                self.path["async event delivered again"] += 1
                self.events.appendleft(replace(event, again=True, tries=0))
        finally:
            self.done_with(view)

    # ------------------------------------------------------------------ lost attempts

    def _dropped(self, key: Key, *, first_draw: bool) -> bool:
        """Whether this invocation of ``key`` is lost: the attempt is lost and its time to be
        found lost (``LOST_AFTER_SECONDS`` after it was scheduled) is not up. The first
        invocation of an attempt may be drawn lost (Lambda dropped it)."""
        first = key not in self.invoked
        self.invoked.add(key)
        if first and first_draw and self.draw(LOSE):
            self.lost.add(key)
            self.path["attempts lost"] += 1
        if key not in self.lost:
            return False
        if key not in self.lost_until:
            self.lost_until[key] = self._scheduled(key) + timedelta(seconds=LOST_AFTER_SECONDS)
        return self.clock.now() < self.lost_until[key]

    def _lose_if_silent(self, key: Key) -> None:
        """An invocation of ``key`` died with no retry left: lost, unless it has an outcome."""
        iid, run, task_id, attempt = key
        if key in self.posted or key in self.lost:
            return
        if recorded_outcome(self.inner.history(iid, run=run), task_id, attempt) is not None:
            return
        until = self._scheduled(key) + timedelta(seconds=LOST_AFTER_SECONDS)
        # Found lost already, it would be found again later: no uninterrupted run does that.
        assert self.clock.now() < until, f"attempt {key} lost after it was found lost"
        self.lost.add(key)
        self.lost_until[key] = until
        self.path["attempts lost"] += 1

    def _scheduled(self, key: Key) -> datetime:
        iid, run, task_id, attempt = key
        for event in self.inner.history(iid, run=run):
            if (
                isinstance(event, ActivityScheduled)
                and event.task_id == task_id
                and event.attempt == attempt
            ):
                return event.timestamp
        raise AssertionError(f"attempt {key} invoked but never scheduled")


class _LambdaTime:
    """An orchestrator Lambda's remaining time, which only steps use up: with ``works`` it
    falls under ``TIME_MARGIN_SECONDS`` after that many steps, so never between a look at
    it and the next (as real time does not), nor inside a batch of local attempts (cut
    there, a retry of one may run before another's first attempt and win an ``any``: a
    race an uninterrupted run cannot reproduce)."""

    def __init__(self, works: int | None) -> None:
        self.works = works
        self.done = 0

    def worked(self) -> None:
        self.done += 1

    def left(self) -> float:
        return LAMBDA_SECONDS if self.works is None or self.done < self.works else 1.0


def _function_error() -> dict[str, Any]:
    body = json.dumps(CRASH_REPLY).encode()
    return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(body)}


def _resolve(name: str) -> Any:
    from durable.workflow import get_workflow

    return get_workflow(name)


# ----------------------------------------------------------------------------- driving


@dataclass
class AwsOutcome(Outcome):
    """An :class:`Outcome` and what only the AWS driver knows."""

    lost: frozenset[Key] = frozenset()
    """Attempts that were lost (no invocation answered before they were found lost)."""


def recorded_crashes(outcome: Outcome) -> frozenset[Key]:
    """The attempts whose synchronous invocation died, as the histories recorded them."""
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
    lost: frozenset[Key] = frozenset(),
) -> AwsOutcome:
    """Run ``case`` to its end through the AWS loop; with ``seed``, under its crash schedule.

    ``crashed``: attempts whose synchronous invocation dies; ``lost``: attempts no
    invocation answers before they are found lost (what a schedule did, for the
    uninterrupted run it is compared with).
    """
    plan = aws_plan(seed) if seed is not None else None
    with tables.table() as name:
        cloud = _Cloud(name, tables, plan, crashed, lost)
        payload = encode_input(case.workflow, case.input)
        while True:  # the API: create (a client retries), then StartExecution
            try:
                create_instance(cloud.view(), case.workflow, payload, IID, EPOCH)
                break
            except Crash:
                continue
        cloud.start_loop(IID)
        for name_, data, when in case.events:
            if when == "early":
                cloud.inner.post(
                    IID, EventMessage(event=name_, data=encode(data), received_at=EPOCH)
                )
        pending_events = [(n, d) for n, d, when in case.events if when == "waiting"]
        machine = cloud.machine
        for _ in range(MAX_ROUNDS):
            if machine.runnable and cloud.execution_first():
                machine.advance(machine.runnable.popleft())
                continue
            if cloud.events:
                cloud.run_event()
                continue
            raised = next(
                (
                    (n, d)
                    for n, d in pending_events
                    if any(f"event {n!r}" in w for w in cloud.waiting_on.get(IID, []))
                ),
                None,
            )
            if raised is not None:  # the API posts it; the post answers the parked execution
                pending_events.remove(raised)
                message = EventMessage(
                    event=raised[0], data=encode(raised[1]), received_at=cloud.clock.now()
                )
                cloud.api_post(IID, message)
                continue
            if machine.timeouts():
                continue
            break
        else:
            busiest = dict(cloud.path.most_common(8))
            raise AssertionError(f"not finished after {MAX_ROUNDS} rounds (busiest: {busiest})")
        unfinished = cloud.inner.list_instances(status=UNFINISHED, limit=1_000_000)
        ends = {e.name: e.end for e in machine.executions.values()}
        assert not unfinished, f"no execution moves, instances unfinished: {ends}"
        _check_executions(cloud)
        outcome = collect(cloud.inner, case)
    result = AwsOutcome(outcome.results, outcome.histories, lost=frozenset(cloud.lost))
    result.reruns = cloud.reruns
    result.path = cloud.path
    if plan is not None:
        result.kills = plan.kills
        result.duplicated = plan.duplicated
    return result


def run_for(
    workflow: Any,
    input: Any,
    days: int,
    tables: Tables,
    *,
    hand_over_events: int = HAND_OVER_EVENTS,
    rounds: int = MAX_ROUNDS,
) -> list[Execution]:
    """Start an instance of ``workflow`` and run its loop, uninterrupted, for ``days`` of
    virtual time, ``rounds`` moves, or until nothing moves (the instance need not end): its
    executions."""
    with tables.table() as name:
        cloud = _Cloud(name, tables, None, frozenset(), frozenset())
        cloud.hand_over_events = hand_over_events
        create_instance(cloud.inner, workflow, encode_input(workflow, input), IID, EPOCH)
        cloud.start_loop(IID)
        machine = cloud.machine
        for _ in range(rounds):
            if cloud.events:
                cloud.run_event()
            elif machine.runnable:
                machine.advance(machine.runnable.popleft())
            elif cloud.clock.now() - EPOCH > timedelta(days=days) or not machine.timeouts():
                break
        return list(machine.executions.values())


def _check_executions(cloud: _Cloud) -> None:
    """Every execution ended as the loop ends; an instance's last one as its status says."""
    last: dict[str, Execution] = {}
    for execution in cloud.machine.executions.values():
        assert execution.status != "RUNNING", f"{execution.name} still in {execution.state}"
        assert execution.end in ("Finished", "WorkflowFailed", "HandedOver"), (
            f"{execution.name} ended in {execution.end}"
        )
        before = last.get(execution.instance_id)
        if before is None or before.generation < execution.generation:
            last[execution.instance_id] = execution
    for iid, execution in last.items():
        header = cloud.inner.get(iid)
        assert header is not None, iid
        want = "Finished" if header.status == Status.COMPLETED else "WorkflowFailed"
        assert execution.end == want, f"{iid} is {header.status}, its loop ended in {execution.end}"


def check_schedule(
    case: Case,
    seed: int,
    tables: Tables,
    clean_runs: dict[tuple[str, frozenset[Key], frozenset[Key]], Outcome] | None = None,
) -> AwsOutcome:
    """Run ``case`` under the schedule of ``seed`` and check it against the uninterrupted run
    (the one with the same crashed and lost attempts); returns the crashed run's outcome.

    ``clean_runs`` caches uninterrupted runs by case, crashed and lost attempts.

    Raises:
        AssertionError: an invariant does not hold (see :func:`harness.check_outcome`).
    """
    cache = clean_runs if clean_runs is not None else {}
    chaotic = drive_aws(case, seed, tables)
    crashed = recorded_crashes(chaotic)
    key = (case.name, crashed, chaotic.lost)
    if key not in cache:
        cache[key] = drive_aws(case, None, tables, crashed=crashed, lost=chaotic.lost)
    clean = cache[key]
    check_redispatches(clean, chaotic.lost)
    check_redispatch_spacing(chaotic)
    check_outcome(clean, chaotic, same_history=False)
    for iid, runs in clean.histories.items():
        got = chaotic.histories[iid]
        assert len(got) == len(runs), f"{iid} ran {len(got)} times, not {len(runs)}"
        for number, (want, have) in enumerate(zip(runs, got, strict=True), 1):
            wanted, had = by_task(want), by_task(have)
            for task in sorted(wanted.keys() | had.keys(), key=str):
                assert same_task(wanted.get(task, []), had.get(task, [])), (
                    f"history of {iid} run {number} differs for task {task}: "
                    f"{had.get(task)} != {wanted.get(task)}"
                )
    return chaotic


def redispatches(outcome: Outcome) -> Counter[Key]:
    """How many times each attempt was recorded as dispatched again (found lost)."""
    found: Counter[Key] = Counter()
    for iid, runs in outcome.histories.items():
        for number, history in enumerate(runs, 1):
            for event in history:
                if isinstance(event, ActivityRedispatched):
                    found[(iid, number, event.task_id, event.attempt)] += 1
    return found


def check_redispatches(clean: Outcome, lost: frozenset[Key]) -> None:
    """In an uninterrupted run, an attempt is dispatched again only if it was ``lost``, and
    then once: found lost when its first dispatch is ``LOST_AFTER_SECONDS`` old, and not
    again by the calls before the new invocation answers."""
    for key, count in redispatches(clean).items():
        assert key in lost, f"attempt {key} was dispatched again but never lost"
        assert count == 1, f"attempt {key} was dispatched again {count} times"


def check_redispatch_spacing(outcome: Outcome) -> None:
    """Crashed or not, an attempt is recorded as dispatched again only once it is lost:
    ``LOST_AFTER_SECONDS`` after it was scheduled, and as long after each such record."""
    period = timedelta(seconds=LOST_AFTER_SECONDS)
    for iid, runs in outcome.histories.items():
        for number, history in enumerate(runs, 1):
            last: dict[tuple[int, int], datetime] = {}
            for event in history:
                if isinstance(event, ActivityScheduled):
                    last[(event.task_id, event.attempt)] = event.timestamp
                elif isinstance(event, ActivityRedispatched):
                    key = (event.task_id, event.attempt)
                    assert event.timestamp >= last[key] + period, (
                        f"{iid} run {number}: task {event.task_id} attempt {event.attempt} "
                        f"dispatched again at {event.timestamp}, before it was lost "
                        f"(dispatched at {last[key]})"
                    )
                    last[key] = event.timestamp


def same_task(want: list[dict[str, Any]], have: list[dict[str, Any]]) -> bool:
    """The same events (``have``: the crashed run's; ``want``: the uninterrupted run's),
    where a retry may be due later in the crashed run (:func:`_retry_delayed`), or the same
    but for one outcome recorded in one run only: an activity the workflow no longer waited
    for (an ``all`` that failed first) whose result arrived before the end in one run and
    after it in the other."""
    if len(want) == len(have) and all(map(_same_or_retry_delayed, want, have)):
        return True
    short, long = sorted((want, have), key=len)
    return (
        len(long) == len(short) + 1
        and long[:-1] == short
        and long[-1]["kind"] in ("ActivityCompleted", "ActivityFailed")
    )


def _same_or_retry_delayed(want: dict[str, Any], have: dict[str, Any]) -> bool:
    """Equal events, or the same retry due later in the crashed run.

    A retry is due a delay after its failure arrived. A recovery re-dispatches every
    attempt it finds in flight that is not lost yet and waits a full ``LOST_AFTER_SECONDS``
    for them before it looks for lost ones; an attempt whose invocations keep being lost is
    therefore found lost, and fails, later than in the uninterrupted run (which has no
    recovery), and its retry is due later: never earlier.
    """
    if want == have:
        return True
    if want["kind"] != "ActivityRetryScheduled" or have["kind"] != "ActivityRetryScheduled":
        return False
    rest = {k: v for k, v in want.items() if k != "fire_at"}
    return rest == {k: v for k, v in have.items() if k != "fire_at"} and datetime.fromisoformat(
        have["fire_at"]
    ) >= datetime.fromisoformat(want["fire_at"])


def by_task(history: Sequence[Event]) -> dict[int | None, list[dict[str, Any]]]:
    """A history's events per task id (``None``: the instance's own), in order, without
    ``seq``: a crash may record results of different tasks in another order (an attempt
    whose result was lost runs again later), never change what one task went through.
    Without ``ActivityRedispatched``: whether an attempt is found lost depends on when the
    calls come, which a crash changes (a recovery dispatches every attempt not lost yet
    again, unrecorded, where the uninterrupted run may later find it lost and record that)."""
    found: dict[int | None, list[dict[str, Any]]] = {}
    for event in without_redispatches(history):
        found.setdefault(event.get("task_id"), []).append(event)
    return found
