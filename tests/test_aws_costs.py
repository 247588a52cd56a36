"""The cost model (tests/aws_costs.py): its arithmetic, then the workloads it runs in moto.

What is asserted is structure that must not drift silently: every billed transition
is a state the executions entered, as the orchestrator's answers imply; every AWS
request is billed to the invocation whose code made it; the orchestrator pays for
the time it waits on the activity Lambda; both sides compute the same results. The
cost targets themselves are printed, not asserted (``python -m tests.aws_costs``
reports them).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import aws_costs
from tests.aws_costs import (
    ADA,
    BASE_MS,
    CHAIN_ANSWERS,
    HANDWRITTEN,
    PRICES,
    REMIND_ANSWERS,
    REQUEST_MS,
    Costs,
    Meter,
    Request,
    Results,
    Row,
    bill,
    handwritten_states,
    loop_states,
)
from tests.aws_harness import Invocation

ASL_VALIDATOR = "asl-validator@4.0.0"
HANDWRITTEN_ASL = sorted(HANDWRITTEN.glob("*.asl.json"))


# ----------------------------------------------------------------------------- the model


def test_loop_states_follow_the_orchestrators_answers() -> None:
    assert loop_states(REMIND_ANSWERS) == Counter(Orchestrate=3, Sleep=2, Finished=1)
    assert loop_states(CHAIN_ANSWERS) == Counter(Orchestrate=1, Finished=1)
    assert loop_states(["durable.Failed"]) == Counter(Orchestrate=1, WorkflowFailed=1)
    # A park woken by a post goes on through Sleep; one whose timer came due through TimerDue.
    parked = ["park", "park", "durable.Succeeded"]
    assert loop_states(parked) == Counter(Orchestrate=3, Sleep=2, Finished=1)
    assert loop_states(parked, timed_out=1) == Counter(
        Orchestrate=3, Sleep=1, TimerDue=1, Finished=1
    )
    # Mail while parking: the same invocation goes on, no transition.
    assert loop_states(["mail", "continue", "durable.Succeeded"]) == Counter(
        Orchestrate=2, Sleep=1, Finished=1
    )
    assert loop_states(["durable.HandOver", "durable.Succeeded"]) == Counter(
        Orchestrate=2, NextGeneration=1, HandOver=1, HandedOver=1, Finished=1
    )
    with pytest.raises(ValueError, match="unknown answer"):
        loop_states(["run"])


def test_handwritten_walk_follows_next() -> None:
    assert handwritten_states("remind_user.asl.json") == Counter(
        {"Wait two hours": 1, "First reminder": 1, "Wait one day": 1, "Second reminder": 1}
    )
    assert sum(handwritten_states("chain10.asl.json").values()) == 10


def _invocation(function: str, memory_mb: int = 512, thread: int = 1) -> Invocation:
    return Invocation(function, {}, done=True, memory_mb=memory_mb, thread=thread)


def test_a_synchronous_invoke_bills_the_callee_twice() -> None:
    """The orchestrator waits for the activity: its duration is billed to both."""
    orchestrator = _invocation("orchestrator")
    activity = _invocation("activity", memory_mb=1024)
    log = [
        Request("dynamodb:GetItem", orchestrator, 1),
        Request("lambda:Invoke", orchestrator, 1, synchronous=True, child=activity),
        Request("dynamodb:GetItem", activity, 1),
        Request("dynamodb:Query", activity, 1),
        Request("stepfunctions:SendTaskSuccess", orchestrator, 1),
    ]
    billed_orchestrator, billed_activity = bill([orchestrator, activity], log)
    activity_ms = BASE_MS + 2 * REQUEST_MS
    assert billed_activity.seconds * 1000 == activity_ms
    assert billed_activity.waiting_ms == 0
    assert billed_orchestrator.aws_requests == 3
    assert billed_orchestrator.request_ms == 3 * REQUEST_MS
    assert billed_orchestrator.waiting_ms == activity_ms
    assert billed_orchestrator.seconds * 1000 == BASE_MS + 3 * REQUEST_MS + activity_ms
    assert math.isclose(billed_orchestrator.gb_seconds, billed_orchestrator.seconds / 2)


def test_an_asynchronous_invoke_is_not_waited_for() -> None:
    orchestrator = _invocation("orchestrator")
    activity = _invocation("activity", thread=2)
    log = [
        Request("lambda:Invoke", orchestrator, 1, synchronous=False),
        Request("dynamodb:GetItem", activity, 2),
    ]
    billed_orchestrator, _ = bill([orchestrator, activity], log)
    assert billed_orchestrator.waiting_ms == 0
    assert billed_orchestrator.seconds * 1000 == BASE_MS + REQUEST_MS


def test_a_round_invoked_from_a_pool_costs_its_longest_invocation() -> None:
    """Five invokes from a five-thread pool run at once: the wait is the longest, not the sum."""
    orchestrator = _invocation("orchestrator")
    pool = ThreadPoolExecutor(max_workers=5)
    children = [_invocation("activity", thread=10 + k) for k in range(5)]
    log = [Request("dynamodb:Query", orchestrator, 1)]
    for k, child in enumerate(children):
        # the emulator may run them on fewer threads (one at a time): the pool's width counts
        log.append(Request("lambda:Invoke", orchestrator, 10, pool, True, child))
        log += [Request("dynamodb:GetItem", child, 10 + k)] * (k + 1)
    billed = bill([orchestrator, *children], log)
    longest = BASE_MS + 5 * REQUEST_MS
    assert billed[0].waiting_ms == longest
    assert billed[0].request_ms == 2 * REQUEST_MS  # its own Query, then the round
    # A single thread it started, or a one-thread pool, runs its requests one after another.
    single = threading.Thread(target=lambda: None)
    log = [Request("lambda:Invoke", orchestrator, 2, single, True, c) for c in children[:2]]
    log += [Request("dynamodb:GetItem", c, 0) for c in children[:2]]
    assert bill([orchestrator], log)[0].waiting_ms == 2 * (BASE_MS + REQUEST_MS)
    pool.shutdown()


def test_asynchronous_starts_run_as_wide_as_their_pool() -> None:
    orchestrator = _invocation("orchestrator")
    pool = ThreadPoolExecutor(max_workers=16)
    log = [Request("lambda:Invoke", orchestrator, 3, pool) for _ in range(100)]
    assert bill([orchestrator], log)[0].request_ms == math.ceil(100 / 16) * REQUEST_MS
    pool.shutdown()


def test_meter_bills_threads_started_by_a_function_to_it() -> None:
    """A pool or a thread the function's code starts works for that invocation."""
    me = _invocation("orchestrator", thread=threading.get_ident())
    me.done = False
    meter = Meter([me])
    start = threading.Thread.start
    meter.install()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            owners = list(pool.map(lambda _: meter._current(), range(2)))
            forks = {meter._owners[t][1] for t in pool._threads}
        found: list[Invocation | None] = []
        helper = threading.Thread(target=lambda: found.append(meter._current()))
        helper.start()
        helper.join()
    finally:
        meter.uninstall()
    assert owners == [me, me] and found == [me]
    assert forks == {pool}
    assert meter._owners[helper] == (me, helper)
    assert threading.Thread.start is start and not meter.on


def test_meter_leaves_threads_the_emulator_starts_alone() -> None:
    """A thread started while AWS serves a request (moto's code) belongs to no function."""
    me = _invocation("api", thread=threading.get_ident())
    me.done = False
    meter = Meter([me])
    emulator: dict[str, object] = {"__name__": "moto.stepfunctions.fake"}
    exec("def serve(thread):\n    thread.start()\n", emulator)
    meter.install()
    try:
        thread = threading.Thread(target=lambda: None)
        emulator["serve"](thread)  # type: ignore[operator]
        thread.join()
    finally:
        meter.uninstall()
    assert thread not in meter._owners


def test_row_prices_each_unit_at_the_list_price() -> None:
    row = Row(
        system="s",
        workload="w",
        steps=4,
        lambda_requests=1_000_000,
        gb_seconds=1000,
        transitions=1000,
        wru=1_000_000,
        rru=1_000_000,
        s3_puts=1000,
        s3_gets=1000,
    )
    d = row.dollars()
    assert math.isclose(d["Lambda"], 0.20 + 1000 * PRICES["lambda_gb_second"])
    assert math.isclose(d["Step Functions"], 0.025)
    assert math.isclose(d["DynamoDB"], 0.625 + 0.125)
    assert math.isclose(d["S3"], 0.005 + 0.0004)
    assert d["durable ops"] == 0
    assert math.isclose(d["total"], sum(v for k, v in d.items() if k != "total"))
    per_million = row.scaled(1e6 / row.steps)
    assert math.isclose(per_million.total, row.total * 250_000)
    assert per_million.steps == 4 and per_million.transitions == 250_000_000


# ----------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def results() -> Results:
    return aws_costs.run(quick=True)


def _function_ms(costs: Costs, kind: str) -> list[float]:
    return [i.seconds * 1000 for i in costs.invocations if i.kind == kind]


@pytest.mark.slow
@pytest.mark.parametrize("path", HANDWRITTEN_ASL, ids=lambda p: p.name)
def test_handwritten_machines_pass_asl_validator(path: object) -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail(f"npx (Node.js) is missing: run `npx --yes {ASL_VALIDATOR} --json-path {path}`")
    done = subprocess.run(
        [npx, "--yes", ASL_VALIDATOR, "--json-path", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_handwritten_chain_enters_each_of_its_ten_tasks_once(results: Results) -> None:
    hand = results.chain10_hand
    asl = json.loads((HANDWRITTEN / "chain10.asl.json").read_text())
    tasks = [name for name, s in asl["States"].items() if s["Type"] == "Task"]
    assert len(tasks) == 10
    assert hand.states == handwritten_states("chain10.asl.json") == dict.fromkeys(tasks, 1)
    assert hand.transitions == 10
    assert hand.lambda_invocations == {"handwritten-square-step": 10}
    assert _function_ms(hand, "handwritten-square-step") == [BASE_MS] * 10
    assert hand.output == {"i": 10, "value": sum(i * i for i in range(10))}


@pytest.mark.slow
def test_handwritten_remind_user_enters_the_states_its_asl_implies(results: Results) -> None:
    hand = results.remind_hand
    assert hand.states == handwritten_states("remind_user.asl.json")
    assert hand.transitions == 4
    assert hand.lambda_invocations == {"handwritten-send-email": 2}
    assert hand.output == {**ADA, "times_reminded": 2}


@pytest.mark.slow
def test_durable_remind_user_orchestrates_three_times_and_waits_for_both_emails(
    results: Results,
) -> None:
    durable = results.remind
    assert durable.answers == REMIND_ANSWERS
    assert (
        durable.states == loop_states(REMIND_ANSWERS) == Counter(Orchestrate=3, Sleep=2, Finished=1)
    )
    assert durable.transitions == 6
    assert durable.lambda_invocations == {"api": 1, "orchestrator": 3, "activity": 2}
    assert durable.requests["lambda:Invoke"] == 2  # both synchronous, from the orchestrator
    orchestrator = durable.per_function()["orchestrator"]
    assert orchestrator.waiting_ms == sum(_function_ms(durable, "activity"))
    assert durable.output == results.remind_hand.output


@pytest.mark.slow
def test_durable_dispatched_chain_is_one_orchestrator_invocation_waiting_ten_times(
    results: Results,
) -> None:
    durable = results.chain10
    assert durable.answers == CHAIN_ANSWERS
    assert durable.states == Counter(Orchestrate=1, Finished=1)
    assert durable.lambda_invocations == {"api": 1, "orchestrator": 1, "activity": 10}
    assert durable.requests["lambda:Invoke"] == 10
    (orchestrator,) = [i for i in durable.invocations if i.kind == "orchestrator"]
    activities = _function_ms(durable, "activity")
    assert orchestrator.waiting_ms == sum(activities)  # one after another
    assert orchestrator.seconds * 1000 == (
        BASE_MS + orchestrator.aws_requests * REQUEST_MS + sum(activities)
    )
    # The activity's time is billed twice: in the activity and in the orchestrator waiting.
    activity_gb_s = sum(i.gb_seconds for i in durable.invocations if i.kind == "activity")
    waiting_gb_s = orchestrator.waiting_ms / 1000 * orchestrator.memory_mb / 1024
    assert math.isclose(waiting_gb_s, activity_gb_s * orchestrator.memory_mb / 1024)
    assert durable.output == results.chain10_hand.output["value"]


@pytest.mark.slow
def test_durable_fan_out_waits_for_its_longest_activity(results: Results) -> None:
    (fan_out,) = [c for c in results.more if c.name == "5-way fan-out, dispatched"]
    assert fan_out.states == Counter(Orchestrate=1, Finished=1)
    assert fan_out.lambda_invocations == {"api": 1, "orchestrator": 1, "activity": 5}
    orchestrator = fan_out.per_function()["orchestrator"]
    assert orchestrator.waiting_ms == max(_function_ms(fan_out, "activity"))
    assert fan_out.output == sum(i * i for i in range(5))


@pytest.mark.slow
def test_durable_local_chain_takes_no_transition_per_step(results: Results) -> None:
    durable = results.local10
    assert durable.states == loop_states(CHAIN_ANSWERS)
    assert durable.lambda_invocations == {"api": 1, "orchestrator": 1}
    assert durable.per_function()["orchestrator"].waiting_ms == 0
    assert durable.output == 10


@pytest.mark.slow
def test_every_request_is_billed_and_every_transition_is_a_state_entered(
    results: Results,
) -> None:
    for costs in results.all():
        assert not costs.unattributed, (costs.name, costs.unattributed)
        assert sum(i.aws_requests for i in costs.invocations) == sum(costs.requests.values())
        assert costs.transitions == sum(costs.states.values())
        if costs.system == "durable":
            # measure() checked the states against AwsHarness.states_entered() too
            assert costs.states == loop_states(costs.answers, timed_out=costs.timed_out)
        row = costs.row()
        assert row.lambda_requests == len(costs.invocations)
        assert math.isclose(row.dollars()["Step Functions"], costs.transitions * 0.025 / 1000)
        assert math.isclose(
            row.dollars()["Lambda"],
            len(costs.invocations) * 0.20 / 1e6 + costs.gb_seconds * 0.0000166667,
        )
    assert results.remind.count("dynamodb:") > 0 and results.remind.wru > 0
    assert results.chain10_hand.count("dynamodb:") == 0


@pytest.mark.slow
def test_report_has_the_tables_the_source_and_a_verdict_per_target(results: Results) -> None:
    report = results.render()
    print(report)
    for heading in (
        "## Per workflow run",
        "## Per 1,000,000 steps",
        "## Lambda time per function",
        "## Where the transitions go: remind_user",
        "## Targets",
    ):
        assert heading in report
    assert "https://aws.amazon.com/lambda/pricing/" in report
    assert "Route" not in report and "RunActivities" not in report  # the old loop's states
    verdicts = report.split("## Targets")[1].strip().splitlines()
    assert len(verdicts) == 4
    assert all(re.match(r"\* \*\*(PASS|FAIL)\*\* ", v) for v in verdicts), verdicts
