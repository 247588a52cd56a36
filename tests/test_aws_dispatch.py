"""How the orchestrator talks to the activity Lambda and answers its own task.

The Lambda client here is a stand-in for boto3's at the AWS boundary: it
returns what the Invoke API returns (``StatusCode``, ``FunctionError``, a
streaming ``Payload``) or raises botocore's read timeout. Everything on our
side of that boundary is the real code.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from durable.decision import ActivityWork
from durable.history import ActivityResult, message_to_json
from durable.runtime.aws_config import wake_handle
from durable.runtime.aws_dispatch import LambdaDispatcher
from durable.runtime.aws_loop import (
    ENDINGS,
    MAX_PARK_SECONDS,
    ActivityRef,
    LoopDecision,
    answer_task,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class _FixedClock:
    def now(self) -> datetime:
        return NOW


Reply = Callable[[dict[str, Any]], dict[str, Any]]


class _LambdaClient:
    """Answers ``invoke`` the way the Lambda API does, from a reply per task id."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        payload = json.loads(kwargs["Payload"])
        with self._lock:
            self.calls.append({**kwargs, "Payload": payload})
        if kwargs.get("InvocationType") == "Event":
            return {"StatusCode": 202, "Payload": io.BytesIO(b"")}
        assert self.reply is not None
        return self.reply(payload)


def _work(task_id: int, attempt: int = 1) -> ActivityWork:
    return ActivityWork("inst", 1, task_id, attempt, "shop.charge", {"args": []}, 30.0)


def _ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(body).encode())}


def _dispatcher(client: _LambdaClient, wall: float = 1_000.0) -> LambdaDispatcher:
    return LambdaDispatcher(client, client, "stack-activity", _FixedClock(), wall=lambda: wall)


def test_a_reply_with_an_outcome_is_the_attempts_result() -> None:
    def reply(payload: dict[str, Any]) -> dict[str, Any]:
        result = ActivityResult(
            task_id=payload["task_id"],
            run=payload["run"],
            attempt=payload["attempt"],
            result=payload["task_id"] * 10,
            received_at=NOW,
        )
        return _ok({"status": "completed", "outcome": message_to_json(result)})

    client = _LambdaClient(reply)
    results = _dispatcher(client).call([_work(1), _work(2)], 3.0)

    assert [r.result if r else None for r in results] == [10, 20]
    sent = sorted(client.calls, key=lambda c: c["Payload"]["task_id"])
    work = {"activity": "shop.charge", "input": {"args": []}, "timeout": 30.0}
    assert [c["Payload"] for c in sent] == [
        {"instance_id": "inst", "run": 1, "task_id": t, "attempt": 1, "reply_by": 1_003.0}
        | {"work": work}  # the attempt travels whole: no history read in the activity
        for t in (1, 2)
    ]
    assert all(c["FunctionName"] == "stack-activity" for c in sent)
    assert all("InvocationType" not in c for c in sent)  # RequestResponse: waited for


def test_an_attempt_that_posted_or_was_skipped_has_no_result_here() -> None:
    client = _LambdaClient(
        lambda p: _ok({"status": "completed" if p["task_id"] == 1 else "skipped"})
    )

    assert _dispatcher(client).call([_work(1), _work(2)], 3.0) == [None, None]


def test_a_read_timeout_leaves_the_attempt_to_post_its_outcome() -> None:
    def reply(payload: dict[str, Any]) -> dict[str, Any]:
        raise ReadTimeoutError(endpoint_url="https://lambda")

    assert _dispatcher(_LambdaClient(reply)).call([_work(1)], 3.0) == [None]


def test_a_function_error_is_a_failed_attempt_naming_the_crash() -> None:
    crash = {"errorType": "Runtime.OutOfMemory", "errorMessage": "Runtime exited"}

    def reply(payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(crash).encode()
        return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(body)}

    [result] = _dispatcher(_LambdaClient(reply)).call([_work(7, attempt=2)], 3.0)

    assert result is not None
    assert (result.task_id, result.run, result.attempt) == (7, 1, 2)
    assert result.received_at == NOW
    assert result.error is not None
    assert result.error.type.endswith("ActivityCrashed")
    assert result.error.message == "Runtime.OutOfMemory: Runtime exited"


def test_a_function_error_without_a_json_body_still_fails_the_attempt() -> None:
    def reply(payload: dict[str, Any]) -> dict[str, Any]:
        return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(b"boom")}

    [result] = _dispatcher(_LambdaClient(reply)).call([_work(1)], 3.0)

    assert result is not None and result.error is not None
    assert result.error.message == "boom"


def test_an_outcome_of_another_kind_is_not_taken_for_a_result() -> None:
    from durable.history import EventMessage

    stray = message_to_json(EventMessage(event="x", received_at=NOW))
    client = _LambdaClient(lambda p: _ok({"status": "completed", "outcome": stray}))

    assert _dispatcher(client).call([_work(1)], 3.0) == [None]


def test_starting_invokes_asynchronously_once_per_attempt() -> None:
    client = _LambdaClient()
    refs = [ActivityRef("inst", 1, t, 1) for t in range(40)]

    _dispatcher(client).start(refs)

    assert sorted(c["Payload"]["task_id"] for c in client.calls) == list(range(40))
    assert {c["InvocationType"] for c in client.calls} == {"Event"}
    assert all("reply_by" not in c["Payload"] for c in client.calls)


def test_nothing_to_call_or_start_sends_nothing() -> None:
    client = _LambdaClient()
    dispatcher = _dispatcher(client)

    assert dispatcher.call([], 3.0) == []
    dispatcher.start([])
    assert client.calls == []


# ----------------------------------------------------------------------------- answer_task


class _Answers:
    """Records what ``answer_task`` does with the token (the SFN side, as a test double)."""

    def __init__(self, left: float | None = None, mail: bool = False, refusals: int = 0) -> None:
        """``mail``: every park is refused; ``refusals``: that many parks are, then none."""
        self.left, self.mail, self.refusals = left, mail, refusals
        self.done: list[tuple[str, Any]] = []

    def succeed(self, output: dict[str, Any]) -> None:
        self.done.append(("succeed", output))

    def fail(self, error: str, cause: str) -> None:
        self.done.append(("fail", error))

    def start(self, refs: Sequence[ActivityRef]) -> None:
        self.done.append(("start", list(refs)))

    def park(self, output: dict[str, Any]) -> bool:
        self.done.append(("park", output))
        if self.refusals > 0:
            self.refusals -= 1
            return False
        return not self.mail

    def seconds_left(self) -> float | None:
        return self.left


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_endings_fail_the_task_with_the_error_the_asl_catches(ending: str) -> None:
    answers = _Answers()

    assert answer_task(LoopDecision(ending), answers) == ENDINGS[ending]
    assert answers.done == [("fail", ENDINGS[ending])]


def test_continue_answers_at_once_and_sleep_names_its_seconds() -> None:
    answers = _Answers()
    assert answer_task(LoopDecision("continue", events_before=4), answers) == "continue"
    assert answer_task(LoopDecision("sleep", wait_seconds=90, events_before=4), answers) == "sleep"

    [(_, go_on), (_, sleep)] = answers.done
    assert go_on["wait_seconds"] == 0
    assert sleep["wait_seconds"] == 90
    assert go_on["events"] == sleep["events"] == 4 + 20  # an iteration counts 20 events


def test_a_park_whose_task_times_out_with_the_timer_leaves_the_token() -> None:
    refs = [ActivityRef("inst", 1, 3, 1)]
    answers = _Answers(left=300.5)

    assert answer_task(LoopDecision("park", refs, wait_seconds=300), answers) == "park"
    assert [kind for kind, _ in answers.done] == ["start", "park"]
    assert answers.done[0][1] == refs


def test_a_park_whose_task_would_time_out_at_the_wrong_time_reparks() -> None:
    answers = _Answers(left=MAX_PARK_SECONDS)

    assert answer_task(LoopDecision("park", wait_seconds=60), answers) == "repark"
    [(kind, output)] = answers.done
    assert kind == "succeed"
    assert output["timeout"] == 60 and output["wait_seconds"] == 0


def test_a_park_with_no_known_timeout_reparks() -> None:
    answers = _Answers(left=None)

    assert answer_task(LoopDecision("park", wait_seconds=60), answers) == "repark"


def test_a_refused_park_is_mail_and_answers_nothing() -> None:
    answers = _Answers(left=60.0, mail=True)

    assert answer_task(LoopDecision("park", wait_seconds=60), answers) == "mail"
    assert [kind for kind, _ in answers.done] == ["park"]


def test_an_unknown_decision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown loop decision 'run'"):
        answer_task(LoopDecision("run"), _Answers())


# ----------------------------------------------------------------------------- wake handles


def test_a_wake_handle_carries_the_token_the_decision_and_the_deadline() -> None:
    output = LoopDecision("park", wait_seconds=60).output()

    handle = json.loads(wake_handle("tok-1", output, deadline=1_234.5))

    assert handle == {"token": "tok-1", "output": output, "deadline": 1_234.5}


class _StepFunctions:
    """Records ``SendTaskSuccess``; raises like the API for tokens no longer waiting."""

    class exceptions:
        class TaskTimedOut(Exception):
            pass

        class InvalidToken(Exception):
            pass

        class TaskDoesNotExist(Exception):
            pass

    def __init__(self, raises: type[Exception] | None = None) -> None:
        self.raises = raises
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task_success(self, *, taskToken: str, output: str) -> None:
        if self.raises is not None:
            raise self.raises("gone")
        self.sent.append((taskToken, json.loads(output)))


def test_waking_far_from_the_deadline_keeps_it_for_the_woken_task() -> None:
    from durable.runtime.aws_config import wake_with

    sfn = _StepFunctions()
    output = LoopDecision("park", wait_seconds=3_600).output()

    wake_with(sfn, wake_handle("tok", output, deadline=5_000.2), wall=lambda: 1_000.0)

    assert sfn.sent == [("tok", {**output, "timeout": 4_001})]


def test_waking_close_to_the_deadline_gives_the_woken_task_a_full_timeout() -> None:
    from durable.runtime.aws_config import (
        MAX_TIMEOUT_SECONDS,
        WORKING_TIMEOUT_SECONDS,
        wake_with,
    )

    sfn = _StepFunctions()
    output = LoopDecision("park", wait_seconds=300).output()
    deadline = 1_000.0 + WORKING_TIMEOUT_SECONDS - 1

    wake_with(sfn, wake_handle("tok", output, deadline=deadline), wall=lambda: 1_000.0)

    assert sfn.sent == [("tok", {**output, "timeout": MAX_TIMEOUT_SECONDS})]


def test_a_bare_token_is_woken_with_the_default_decision() -> None:
    from durable.runtime.aws_config import default_decision, wake_with

    sfn = _StepFunctions()

    wake_with(sfn, "bare-token")

    assert sfn.sent == [("bare-token", default_decision())]


@pytest.mark.parametrize("gone", ["TaskTimedOut", "InvalidToken", "TaskDoesNotExist"])
def test_waking_a_token_that_no_longer_waits_is_not_an_error(gone: str) -> None:
    from durable.runtime.aws_config import wake_with

    sfn = _StepFunctions(raises=getattr(_StepFunctions.exceptions, gone))

    wake_with(sfn, wake_handle("tok", {}, deadline=None))

    assert sfn.sent == []


def test_a_throttled_attempt_is_queued_asynchronously_instead() -> None:
    from botocore.exceptions import ClientError

    def reply(payload: dict[str, Any]) -> dict[str, Any]:
        error = {"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}
        raise ClientError(error, "Invoke")

    client = _LambdaClient(reply)

    assert _dispatcher(client).call([_work(4)], 3.0) == [None]
    waited, queued = client.calls
    assert "InvocationType" not in waited
    assert queued["InvocationType"] == "Event"
    assert queued["Payload"] == {"instance_id": "inst", "run": 1, "task_id": 4, "attempt": 1}


def test_a_task_that_timed_out_under_the_orchestrator_leaves_no_dead_token() -> None:
    refs = [ActivityRef("inst", 1, 3, 1)]
    answers = _Answers(left=-0.5)

    assert answer_task(LoopDecision("park", refs, wait_seconds=1), answers) == "expired"
    assert answers.done == [("start", refs)]  # the attempts still run; nothing parked


def test_an_attempt_with_a_big_input_travels_as_a_reference_only() -> None:
    from durable.runtime.aws_loop import CARRIED_INPUT_BYTES

    client = _LambdaClient(lambda p: _ok({"status": "completed"}))
    big = ActivityWork("inst", 1, 1, 1, "shop.charge", {"args": ["x" * CARRIED_INPUT_BYTES]}, None)

    _dispatcher(client).call([big], 3.0)

    [sent] = client.calls
    assert "work" not in sent["Payload"]


def test_a_park_leaves_the_fan_in_wait_for_the_woken_loop() -> None:
    answers = _Answers(left=600.0)
    decision = LoopDecision("park", wait_seconds=600, woken_wait=1)

    assert answer_task(decision, answers) == "park"
    [(kind, output)] = answers.done
    assert kind == "park" and output["wait_seconds"] == 1


# ----------------------------------------------------------------------------- one task's work


def test_mail_while_parking_orchestrates_again_in_the_same_invocation() -> None:
    from durable.runtime.aws_loop import orchestrate_and_answer

    answers = _Answers(left=60.0, refusals=1)  # refused (mail waits), then stored
    calls: list[tuple[bool, int]] = []
    seen: list[str] = []

    def decide(recover: bool, events: int) -> LoopDecision:
        calls.append((recover, events))
        return LoopDecision("park", wait_seconds=60, events_before=events)

    last, done = orchestrate_and_answer(
        decide,
        answers,
        recover=True,
        events=40,
        time_left=lambda: 600.0,
        on_answer=lambda decision, answer: seen.append(answer),
    )

    assert done == seen == ["mail", "park"]
    assert calls == [(True, 40), (False, 40)]  # recovery is done once; the budget carries
    assert last.next == "park"


def test_mail_with_little_time_left_answers_the_task_to_go_on() -> None:
    from durable.runtime.aws_loop import TIME_MARGIN_SECONDS, orchestrate_and_answer

    answers = _Answers(left=60.0, mail=True)

    _, done = orchestrate_and_answer(
        lambda recover, events: LoopDecision("park", wait_seconds=60, events_before=events),
        answers,
        recover=False,
        events=40,
        time_left=lambda: TIME_MARGIN_SECONDS - 1,
    )

    assert done == ["mail", "continue"]
    assert answers.done[-1] == ("succeed", LoopDecision("continue", events_before=40).output())


def test_an_instance_gone_ends_the_loop() -> None:
    from durable.errors import InstanceNotFoundError
    from durable.runtime.aws_loop import orchestrate_and_answer

    def decide(recover: bool, events: int) -> LoopDecision:
        raise InstanceNotFoundError("gone")

    answers = _Answers()
    _, done = orchestrate_and_answer(
        decide, answers, recover=False, events=0, time_left=lambda: 600.0
    )

    assert done == [ENDINGS["fail"]]
    assert answers.done == [("fail", ENDINGS["fail"])]
