"""The cost model (tests/aws_costs.py) on the 10-step chains and remind_user.

What is asserted is structure that must not drift silently: every counted transition
is one the ASL implies, per state; the durable loop spends exactly its designed passes;
both sides compute the same results. The cost targets themselves are printed, not
asserted (``python -m tests.aws_costs`` reports them).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest

from tests import aws_costs
from tests.aws_costs import (
    ADA,
    ASL,
    HANDWRITTEN,
    REMIND_DECISIONS,
    Results,
    chain_decisions,
    handwritten_states,
    iteration_states,
    loop_states,
)

pytestmark = pytest.mark.slow

ASL_VALIDATOR = "asl-validator@4.0.0"
HANDWRITTEN_ASL = sorted(HANDWRITTEN.glob("*.asl.json"))


@pytest.fixture(scope="module")
def results() -> Results:
    return aws_costs.run(quick=True)


def test_loop_passes_cost_what_infra_readme_says() -> None:
    """infra/README.md: 3 transitions + 1 per item for run, 3 for sleep, 4 + 1 per item for park."""
    asl = json.loads(ASL.read_text())
    for items in (1, 2, 5):
        assert sum(iteration_states(asl, "run", items).values()) == 3 + items
        assert sum(iteration_states(asl, "park", items).values()) == 4 + items
    assert sum(iteration_states(asl, "sleep").values()) == 3
    assert iteration_states(asl, "succeed") == {"Orchestrate": 1, "Route": 1, "Finished": 1}


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


def test_handwritten_chain_enters_each_of_its_ten_tasks_once(results: Results) -> None:
    hand = results.chain10_hand
    asl = json.loads((HANDWRITTEN / "chain10.asl.json").read_text())
    tasks = [name for name, s in asl["States"].items() if s["Type"] == "Task"]
    assert len(tasks) == 10
    assert hand.states == handwritten_states("chain10.asl.json") == dict.fromkeys(tasks, 1)
    assert hand.transitions == 10
    assert hand.lambda_invocations == {"handwritten-square-step": 10}
    assert hand.output == {"i": 10, "value": sum(i * i for i in range(10))}


def test_handwritten_remind_user_enters_the_states_its_asl_implies(results: Results) -> None:
    hand = results.remind_hand
    assert hand.states == handwritten_states("remind_user.asl.json")
    assert hand.transitions == 4
    assert hand.lambda_invocations == {"handwritten-send-email": 2}
    assert hand.output == {**ADA, "times_reminded": 2}


def test_durable_remind_user_takes_one_loop_pass_per_decision(results: Results) -> None:
    durable = results.remind
    assert durable.states == loop_states(REMIND_DECISIONS)  # sleep, run, sleep, run, succeed
    assert durable.transitions == 17
    assert durable.lambda_invocations == {"api": 1, "orchestrator": 5, "activity": 2}
    assert durable.output == results.remind_hand.output


def test_durable_dispatched_chain_takes_one_run_pass_per_step(results: Results) -> None:
    durable = results.chain10
    asl = json.loads(ASL.read_text())
    per_step = sum(iteration_states(asl, "run", 1).values())
    last = sum(iteration_states(asl, "succeed").values())
    assert durable.states == loop_states(chain_decisions(10))
    assert durable.transitions == 10 * per_step + last == 43
    assert durable.lambda_invocations == {"api": 1, "orchestrator": 11, "activity": 10}
    assert durable.output == results.chain10_hand.output["value"]


def test_durable_local_chain_takes_no_transition_per_step(results: Results) -> None:
    durable = results.local10
    assert durable.states == loop_states([("succeed", 0)])
    assert durable.lambda_invocations == {"api": 1, "orchestrator": 1}
    assert durable.output == 10


def test_counts_add_up(results: Results) -> None:
    for costs in results.all():
        assert sum(costs.states.values()) == costs.transitions
        # every request was made inside a Lambda invocation, so the duration model saw it
        assert sum(i.aws_requests for i in costs.invocations) == sum(costs.requests.values())
        row = costs.row()
        dollars = row.dollars()
        assert math.isclose(dollars["total"], sum(v for k, v in dollars.items() if k != "total"))
        per_million = row.scaled(1e6 / costs.steps)
        assert math.isclose(per_million.total, row.total * 1e6 / costs.steps)
    assert results.remind.count("dynamodb:") > 0 and results.remind.wru > 0
    assert results.chain10_hand.count("dynamodb:") == 0


def test_report_has_the_tables_the_source_and_a_verdict_per_target(results: Results) -> None:
    report = results.render()
    print(report)
    for heading in ("## Per workflow run", "## Per 1,000,000 steps", "## Targets"):
        assert heading in report
    assert "https://aws.amazon.com/lambda/pricing/" in report
    verdicts = report.split("## Targets")[1].strip().splitlines()
    assert len(verdicts) == 4
    assert all(re.match(r"\* \*\*(PASS|FAIL)\*\* ", v) for v in verdicts), verdicts
