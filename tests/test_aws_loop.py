"""End to end through the real artefacts: infra/template.yaml in moto CloudFormation,
the state machine run by moto's ASL interpreter, every Lambda task routed to our
handlers in-process, DynamoDB and S3 served by moto (see tests/aws_harness.py).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any
from unittest import mock

import pytest

from tests.aws_harness import AwsHarness

pytestmark = pytest.mark.slow

ADA = {"name": "Ada", "email": "ada@example.com"}


def _finished(h: AwsHarness, timeout: float = 60.0) -> list[dict[str, Any]]:
    executions = h.wait_for_executions(timeout)
    return executions


def _once_per_task(h: AwsHarness, instance_id: str) -> Counter[str]:
    """Event kinds of the history, checking no attempt got two outcomes."""
    history = h.store().history(instance_id)
    outcomes = Counter(
        (e.task_id, e.attempt)
        for e in history
        if e.kind in ("ActivityCompleted", "ActivityFailed", "ActivityRetryScheduled")
    )
    assert all(n == 1 for n in outcomes.values()), outcomes
    scheduled = Counter((e.task_id, e.attempt) for e in history if e.kind == "ActivityScheduled")
    assert all(n == 1 for n in scheduled.values()), scheduled
    return Counter(e.kind for e in history)


# ----------------------------------------------------------------------------- examples


def test_remind_user_sleeps_in_wait_states_and_waits_for_its_activities() -> None:
    with AwsHarness() as h:
        iid = h.start("remind_user", ADA)
        executions = _finished(h)
        status = h.status(iid)
        assert [e["status"] for e in executions] == ["SUCCEEDED"]
        assert status["status"] == "COMPLETED"
        assert status["output"] == {**ADA, "times_reminded": 2}
        kinds = _once_per_task(h, iid)
        assert kinds["ActivityCompleted"] == 2 and kinds["TimerFired"] == 2
        # start, sleep; email (the orchestrator waits for the activity Lambda), sleep; email, end
        assert h.answers() == ["sleep", "sleep", "durable.Succeeded"]
        assert h.invocation_counts() == Counter(orchestrator=3, activity=2, api=2)
        assert not any(i.asynchronous for i in h.invocations)
        assert h.states_entered() == Counter(Orchestrate=3, Sleep=2, Finished=1)
        assert h.skipped_resources  # moto skips a few types; the rest of the stack is real
        assert set(h.skipped_resources) <= {
            "AWS::S3::BucketPolicy",
            "AWS::Lambda::EventInvokeConfig",
            "AWS::ApiGateway::Stage",
        }


def test_fan_out_fan_in_example() -> None:
    words = ["durable", "workflows", "are", "just", "code"]
    with AwsHarness() as h:
        iid = h.start("word_report", {"words": words})
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        report = status["output"]
        assert [s["word"] for s in report["stats"]] == words
        assert report["total_letters"] == sum(map(len, words))
        assert report["longest"] == "workflows"
        assert h.invocation_counts()["activity"] == len(words)


def test_human_approval_event_delivered_through_the_api_while_parked() -> None:
    with AwsHarness() as h:
        request = {"request_id": "exp-7", "requester": "Ada", "amount": 1200}
        iid = h.start("expense_approval", request)
        h.wait_until(lambda: "park" in h.answers(), what="the loop parked")
        assert h.status(iid)["custom_status"]["state"] == "waiting for approval"
        code, answer = h.api(
            "POST", f"/instances/{iid}/events/approval", {"approved": True, "by": "Grace"}
        )
        assert code == 202, answer
        executions = _finished(h)
        assert [e["status"] for e in executions] == ["SUCCEEDED"]
        status = h.status(iid)
        assert status["output"]["decision"] == "approved"
        assert status["output"]["decided_by"] == "Grace"
        assert status["output"]["waited_hours"] < 1
        # Parked once (the task times out at the approval deadline), woken by the event.
        assert h.answers()[0] in ("park", "repark")
        assert h.answers().count("park") == 1


def test_human_approval_park_timeout_is_the_timer_firing() -> None:
    with AwsHarness(park_real_seconds=0.2) as h:
        request = {"request_id": "exp-8", "requester": "Bob", "amount": 90}
        iid = h.start("expense_approval", request)
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        assert status["output"]["decision"] == "escalated"
        assert status["output"]["waited_hours"] >= 24
        assert _once_per_task(h, iid)["ActivityCompleted"] == 2


def test_order_saga_ships_when_every_step_succeeds() -> None:
    with AwsHarness() as h:
        iid = h.start("order_saga", {"order_id": "o-1", "amount": 25.0, "sku": "book"})
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        assert status["output"] == {
            "order_id": "o-1",
            "payment_id": "pay-o-1",
            "reservation_id": "res-o-1",
            "tracking_number": status["output"]["tracking_number"],
        }
        assert status["output"]["tracking_number"]
        assert _once_per_task(h, iid)["ActivityCompleted"] == 3


def test_order_saga_compensates_in_reverse_order_when_shipping_fails() -> None:
    with AwsHarness() as h:
        order = {"order_id": "o-2", "amount": 10.0, "sku": "pen", "fail_at": "shipping"}
        iid = h.start("order_saga", order)
        executions = _finished(h)
        assert [e["status"] for e in executions] == ["FAILED"]
        status = h.status(iid)
        assert status["status"] == "FAILED"
        assert status["error"]["type"] == "examples.order_saga.CarrierUnavailable"
        activities = [e.activity for e in h.store().history(iid) if e.kind == "ActivityScheduled"]
        assert activities == [
            "order_saga.charge_payment",
            "order_saga.reserve_inventory",
            "order_saga.ship_order",
            "order_saga.release_inventory",
            "order_saga.refund_payment",
        ]


def test_monitor_continues_as_new_and_ends_with_the_last_run() -> None:
    with AwsHarness() as h:
        iid = h.start("monitor_job", {"job_id": "job-42", "done_after_checks": 7})
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        assert status["output"]["job_id"] == "job-42"
        assert status["output"]["checks"] == 7
        assert status["output"]["runs"] == 3  # 3 checks per run: the 7th is in the third
        assert h.store().get(iid).run == 3


# ----------------------------------------------------------------------------- the loop


def test_fan_out_of_50_activities_waited_for_in_one_orchestrator_invocation() -> None:
    with AwsHarness(inline_seconds=60) as h:
        iid = h.start("aws_flows.fan_out", 50)
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        assert status["output"] == sum(i * i for i in range(50))
        assert _once_per_task(h, iid)["ActivityCompleted"] == 50
        counts = h.invocation_counts()
        assert counts["activity"] == 50
        assert counts["orchestrator"] == 1  # invoke all 50, wait, commit their results, finish
        assert h.states_entered() == Counter(Orchestrate=1, Finished=1)


def test_fan_out_of_70_activities_is_invoked_in_waves_and_taken_by_one_step() -> None:
    """Over INLINE_MAX_ACTIVITIES the orchestrator waits for them a wave at a time."""
    with AwsHarness() as h:
        iid = h.start("aws_flows.fan_out", 70)
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        assert status["output"] == sum(i * i for i in range(70))
        assert _once_per_task(h, iid)["ActivityCompleted"] == 70
        activity = [i for i in h.invocations if i.function.endswith("-activity")]
        assert len(activity) == 70 and not any(i.asynchronous for i in activity)
        assert h.answers() == ["durable.Succeeded"]
        assert h.states_entered() == Counter(Orchestrate=1, Finished=1)


def test_fan_out_started_asynchronously_is_fanned_in_by_few_steps() -> None:
    """Parked on 70 attempts, a woken loop waits FAN_IN_SECONDS: outcomes are taken together."""
    with AwsHarness(inline_seconds=0) as h:
        iid = h.start("aws_flows.fan_out", 70)
        _finished(h)
        assert h.status(iid)["output"] == sum(i * i for i in range(70))
        assert _once_per_task(h, iid)["ActivityCompleted"] == 70
        activity = [i for i in h.invocations if i.function.endswith("-activity")]
        assert len(activity) == 70 and all(i.asynchronous for i in activity)
        assert h.answers()[0] in ("park", "repark")
        # one orchestration per outcome without the fan-in wait; a few with it
        assert h.invocation_counts()["orchestrator"] <= 10  # measured: 5 (31 without)


def test_with_inline_seconds_0_every_activity_round_parks_the_loop() -> None:
    with AwsHarness(inline_seconds=0) as h:
        iid = h.start("remind_user", ADA)
        _finished(h)
        assert h.status(iid)["output"] == {**ADA, "times_reminded": 2}
        activity = [i for i in h.invocations if i.function.endswith("-activity")]
        assert len(activity) == 2 and all(i.asynchronous for i in activity)
        _once_per_task(h, iid)


def test_local_activities_run_inside_one_orchestrator_invocation() -> None:
    with AwsHarness() as h:
        iid = h.start("aws_flows.local_chain", 25)
        _finished(h)
        status = h.status(iid)
        assert status["output"] == 25
        counts = h.invocation_counts()
        assert counts["orchestrator"] == 1
        assert counts["activity"] == 0
        # one checkpoint per attempt: 25 schedules, 25 completions, one commit each
        assert status["version"] >= 26


def test_local_retry_waits_in_a_wait_state_then_a_remote_activity_runs() -> None:
    with AwsHarness() as h:
        iid = h.start("aws_flows.mixed", "key-1")
        _finished(h)
        status = h.status(iid)
        assert status["status"] == "COMPLETED"
        assert status["output"] == {"first": "key-1 ok after 2 attempts", "squared": 49}
        kinds = _once_per_task(h, iid)
        assert kinds["ActivityRetryScheduled"] == 1


def test_child_workflow_runs_in_its_own_execution_and_wakes_the_parent() -> None:
    with AwsHarness() as h:
        iid = h.start("aws_flows.parent", 3)
        executions = _finished(h)
        assert len(executions) == 2 and all(e["status"] == "SUCCEEDED" for e in executions)
        assert h.status(iid)["output"] == 0 + 1 + 4 + 1


def test_hand_over_to_a_successor_execution() -> None:
    with AwsHarness(hand_over_events=50) as h:  # an iteration counts 20 events
        iid = h.start("aws_flows.naps", 6)
        executions = _finished(h)
        assert len(executions) == 3  # 7 iterations: 3 + 3 + 1
        names = sorted(e["name"] for e in executions)
        assert names[-1].endswith(f"-{len(executions) - 1}")
        assert all(n.rsplit("-", 1)[0] == names[0].rsplit("-", 1)[0] for n in names)
        assert {e["status"] for e in executions} == {"SUCCEEDED"}
        assert h.status(iid)["output"] == sum(i * i for i in range(6))
        assert _once_per_task(h, iid)["ActivityCompleted"] == 6


def test_a_sleep_longer_than_a_year_hands_over_before_the_execution_limit() -> None:
    """Executions end within a year: the orchestrator knows its execution's start."""
    with AwsHarness() as h:
        iid = h.start("aws_flows.long_sleep", 400)
        executions = _finished(h)
        assert h.status(iid)["output"] == 400
        assert len(executions) == 2 and {e["status"] for e in executions} == {"SUCCEEDED"}
        assert h.states_entered()["HandOver"] == 1
        assert h.clock.skipped.days >= 399  # 400 days less the real seconds the test took


# ----------------------------------------------------------------------------- crash points


def test_orchestrator_response_lost_after_commit() -> None:
    calls = itertools.count()
    with AwsHarness() as h:
        # The first orchestrator invocation commits (4 activities scheduled) and dies
        # before its answer reaches Step Functions: the recovery path re-dispatches them.
        h.fail_after = lambda kind, payload: kind == "orchestrator" and next(calls) == 0
        iid = h.start("aws_flows.fan_out", 4)
        executions = _finished(h)
        assert [e["status"] for e in executions] == ["SUCCEEDED"]
        assert h.status(iid)["output"] == 0 + 1 + 4 + 9
        assert _once_per_task(h, iid)["ActivityCompleted"] == 4
        failed = [i for i in h.invocations if i.error]
        assert len(failed) == 1 and failed[0].function.endswith("-orchestrator")
        recovered = [i for i in h.invocations if i.payload.get("recover") is True]
        assert len(recovered) == 1


def test_activity_delivered_twice_records_one_outcome() -> None:
    with AwsHarness() as h:
        h.duplicate = lambda kind, payload: kind == "activity"
        iid = h.start("aws_flows.fan_out", 5)
        _finished(h)
        assert h.status(iid)["output"] == 0 + 1 + 4 + 9 + 16
        assert h.invocation_counts()["activity"] == 10
        assert _once_per_task(h, iid)["ActivityCompleted"] == 5


def test_activity_run_twice_after_its_result_was_posted_is_dropped_by_the_engine() -> None:
    """A redelivery that arrives before the first result was consumed runs again and posts again."""
    with AwsHarness() as h:
        h.duplicate = lambda kind, payload: kind == "activity"
        iid = h.start("remind_user", ADA)
        _finished(h)
        status = h.status(iid)
        assert status["output"]["times_reminded"] == 2  # not 3 or 4
        assert _once_per_task(h, iid)["ActivityCompleted"] == 2


def test_park_racing_an_inbox_post_goes_on_in_the_same_invocation() -> None:
    from durable.store.dynamodb import DynamoDBStore

    park = DynamoDBStore.park
    raised: list[str] = []
    with AwsHarness(park_real_seconds=5) as h:

        def post_first(store: DynamoDBStore, instance_id: str, handle: str) -> bool:
            # The event lands after the orchestrator decided to park, before it stores a token
            # (another client posting at that moment, through the API).
            if not raised:
                raised.append(instance_id)
                code, _ = h.api(
                    "POST",
                    f"/instances/{instance_id}/events/approval",
                    {"approved": False, "by": "Eve"},
                )
                assert code == 202
            return park(store, instance_id, handle)

        request = {"request_id": "exp-9", "requester": "Ada", "amount": 5}
        with mock.patch.object(DynamoDBStore, "park", post_first):
            iid = h.start("expense_approval", request)
            _finished(h, timeout=30)
        status = h.status(iid)
        assert status["output"]["decision"] == "rejected"
        assert status["output"]["decided_by"] == "Eve"
        assert h.clock.skipped.total_seconds() < 3600  # woken by the post, not by the timeout
        assert "mail" in h.answers()  # the park was refused: the orchestrator went on itself
        assert "park" not in h.answers()


def test_activity_sandbox_dying_is_a_failed_attempt_retried_by_the_workflow_policy() -> None:
    calls = itertools.count()
    with AwsHarness() as h:
        h.crash_before = lambda kind, payload: kind == "activity" and next(calls) == 0
        iid = h.start("remind_user", ADA)
        executions = _finished(h)
        assert [e["status"] for e in executions] == ["SUCCEEDED"]
        assert h.status(iid)["output"]["times_reminded"] == 2
        history = h.store().history(iid)
        retries = [e for e in history if e.kind == "ActivityRetryScheduled"]
        assert len(retries) == 1 and retries[0].error.type.endswith("ActivityCrashed")
        assert "injected" in retries[0].error.message
        _once_per_task(h, iid)


def test_a_lost_asynchronous_invocation_is_dispatched_again() -> None:
    """Lambda drops an Event invocation after its own retries: the loop notices by the deadline."""
    lost = itertools.count()
    with AwsHarness(
        park_real_seconds=1.0, inline_seconds=0
    ) as h:  # a post has 1 s to wake the park
        h.crash_before = lambda kind, payload: kind == "activity" and next(lost) == 0
        iid = h.start("aws_flows.activity_and_timer", 6)
        executions = _finished(h)
        assert [e["status"] for e in executions] == ["SUCCEEDED"]
        assert h.status(iid)["output"] == 36
        activity_calls = [i for i in h.invocations if i.function.endswith("-activity")]
        assert [i.asynchronous for i in activity_calls] == [True, True]
        assert activity_calls[0].error is not None and activity_calls[1].error is None
        assert h.clock.skipped.total_seconds() >= 900


def test_an_attempt_dispatched_again_is_not_found_lost_again_before_it_answers() -> None:
    """The call that follows a re-dispatch (here the fresh task of a repark) comes before the
    new invocation answers: the re-dispatch is recorded, so that call waits for it instead of
    dispatching the attempt a third time."""
    lost = itertools.count()
    activity_starts = itertools.count()

    def slow_second_start(kind: str, payload: Any) -> None:
        if kind == "activity" and next(activity_starts) == 1:  # the re-dispatch starts late
            seen = len(h.invocations)
            h.wait_until(
                lambda: any(
                    i.done and i.function == h.functions["orchestrator"]
                    for i in h.invocations[seen:]
                ),
                timeout=30,
                what="an orchestration after the re-dispatch",
            )

    with AwsHarness(park_real_seconds=1.0, inline_seconds=0) as h:
        h.crash_before = lambda kind, payload: kind == "activity" and next(lost) == 0
        h.before_call = slow_second_start
        iid = h.start("aws_flows.activity_and_timer", 6)
        assert [e["status"] for e in _finished(h)] == ["SUCCEEDED"]
        assert h.status(iid)["output"] == 36
        activity_calls = [i for i in h.invocations if i.function.endswith("-activity")]
        assert len(activity_calls) == 2
        assert h.history_kinds(iid).count("ActivityRedispatched") == 1


def test_an_asynchronous_invocation_starts_once_its_orchestration_returned() -> None:
    """The harness starts an Event invocation after the orchestrator that made it returned
    (as on Lambda, where starting one takes longer than parking), so no outcome races the
    park that waits for it."""
    early: list[int] = []

    def before(kind: str, payload: Any) -> None:
        if kind == "activity":
            running = [i for i in h.invocations if i.function == h.functions["orchestrator"]]
            early.extend(n for n, i in enumerate(running) if not i.done)

    with AwsHarness(inline_seconds=0) as h:
        h.before_call = before
        iid = h.start("aws_flows.remote_chain", 3)
        assert [e["status"] for e in _finished(h)] == ["SUCCEEDED"]
        assert h.status(iid)["output"] == 5
        assert early == []
        assert "mail" not in h.answers()  # no outcome came in while a loop was parking


def test_only_small_references_travel_through_step_functions() -> None:
    with AwsHarness() as h:
        iid = h.start("aws_flows.big_payload", 1_000_000)
        _finished(h)
        assert h.status(iid)["output"] == 1_000_000
        largest = max(
            len(json.dumps(i.payload)) for i in h.invocations if i.function != "durable-api"
        )
        assert largest < 1024


# ----------------------------------------------------------------------------- API


def test_api_errors_are_clear() -> None:
    with AwsHarness() as h:
        code, body = h.api("POST", "/workflows/no_such_flow", {"input": 1})
        assert code == 404 and "no_such_flow" in body["message"]
        code, body = h.api("POST", "/workflows/remind_user", {"input": {"name": "Ada"}})
        assert code == 422 and body["field"] == "input.email", body
        code, body = h.api("GET", "/instances/nope")
        assert code == 404
        code, body = h.api("POST", "/instances/nope/events/x", {})
        assert code == 404
        code, body = h.api(
            "POST", "/workflows/aws_flows.fan_out", {"input": 2, "instance_id": "fixed"}
        )
        assert code == 202 and body["instance_id"] == "fixed"
        assert body["status_url"].endswith("/prod/instances/fixed")
        _finished(h)
        again, body = h.api(
            "POST", "/workflows/aws_flows.fan_out", {"input": 2, "instance_id": "fixed"}
        )
        assert again == 202  # idempotent on the id
        code, body = h.api(
            "POST", "/workflows/aws_flows.fan_out", {"input": 3, "instance_id": "fixed"}
        )
        assert code == 409
        code, body = h.api("POST", "/instances/fixed/events/x", {})
        assert code == 409


# ----------------------------------------------------------------------------- costs


def test_costs_of_a_run_stay_where_they_are() -> None:
    """Counted from the emulated run (python -m tests.aws_costs prints the full report)."""
    from tests.aws_costs import BASE_MS, measure

    remind = measure("remind_user", "remind_user", ADA)
    # start, sleep 2 h; email (waited for), sleep a day; email (waited for), done
    assert remind.answers == ["sleep", "sleep", "durable.Succeeded"]
    assert remind.states == Counter(Orchestrate=3, Sleep=2, Finished=1)
    assert remind.transitions == 6
    assert remind.lambda_invocations == Counter(api=1, orchestrator=3, activity=2)
    assert remind.requests == Counter(
        {
            # the API's create (1) and the orchestrator's five commits: the first sleep,
            # then per email the fired timer's step and the step with the email's outcome
            "dynamodb:TransactWriteItems": 1 + 5,
            # the orchestrator's first load (GetItem + Query) and one Query of the inbox
            # per later step; the activities get their attempt in the invocation: no read
            "dynamodb:GetItem": 2,
            "dynamodb:Query": 6,
            "lambda:Invoke": 2,
            "stepfunctions:StartExecution": 1,
            "stepfunctions:SendTaskSuccess": 2,
            "stepfunctions:SendTaskFailure": 1,
        }
    )
    assert not remind.unattributed
    # The orchestrator is billed for the time it waits on each activity invocation.
    activities = [i for i in remind.invocations if i.kind == "activity"]
    assert [i.seconds * 1000 for i in activities] == [BASE_MS] * 2
    waiting = sum(i.waiting_ms for i in remind.invocations if i.kind == "orchestrator")
    assert waiting == 2 * BASE_MS

    local = measure("local", "aws_flows.local_chain", 100)
    assert local.states == Counter(Orchestrate=1, Finished=1)
    assert local.lambda_invocations == Counter(api=1, orchestrator=1)
    # A local step is one transaction (its outcome and what follows, committed together)
    # and one Query (the inbox); the orchestrator resumes the generator instead of
    # replaying. Beyond that: the create, the first load (GetItem + Query) and the end.
    assert local.requests["dynamodb:TransactWriteItems"] == 1 + 101
    assert local.requests["dynamodb:Query"] == 1 + 101
    assert local.requests["dynamodb:GetItem"] == 2
