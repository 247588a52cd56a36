"""The stack as data: infra/template.yaml passes cfn-lint, the loop passes asl-validator,
and the template carries what the issue asks for (checked on the parsed template).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
ASL = ROOT / "infra" / "statemachine.asl.json"
ASL_VALIDATOR = "asl-validator@4.0.0"


def _template() -> dict[str, Any]:
    parsed, matches = decode_str(TEMPLATE.read_text())
    assert not matches, matches
    return dict(parsed)


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _template()["Resources"].items() if v["Type"] == kind}


def test_template_passes_cfn_lint() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    assert cfn_lint.exists(), "cfn-lint is a dev dependency: pip install -e '.[dev]'"
    done = subprocess.run(
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_state_machine_passes_asl_validator() -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail(
            "npx (Node.js) is missing: asl-validator runs with "
            f"`npx --yes {ASL_VALIDATOR} --json-path infra/statemachine.asl.json`; "
            "install Node.js (e.g. apt-get install -y nodejs npm) in .ci/run"
        )
    done = subprocess.run(
        [npx, "--yes", ASL_VALIDATOR, "--json-path", str(ASL)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_embeds_the_asl_file_verbatim() -> None:
    machine = _resources("AWS::StepFunctions::StateMachine")["StateMachine"]
    embedded = machine["Properties"]["DefinitionString"]["Fn::Sub"]
    assert isinstance(embedded, str)  # one-argument form (see AWS-TESTING.md on moto)
    assert json.loads(embedded) == json.loads(ASL.read_text())


def test_asl_has_the_loop_states() -> None:
    states = json.loads(ASL.read_text())["States"]
    assert set(states) == {
        "Orchestrate",
        "Sleep",
        "TimerDue",
        "PrepareRecovery",
        "GiveUp",
        "RecoveryBackoff",
        "OrchestratorFailing",
        "NextGeneration",
        "HandOver",
        "HandedOver",
        "Finished",
        "WorkflowFailed",
    }
    orchestrate = states["Orchestrate"]
    assert orchestrate["Resource"].endswith("lambda:invoke.waitForTaskToken")
    assert orchestrate["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"
    assert orchestrate["Parameters"]["Payload"]["entered.$"] == "$$.State.EnteredTime"
    assert orchestrate["TimeoutSecondsPath"] == "$.decision.timeout"
    assert orchestrate["ResultPath"] == "$.decision"
    assert orchestrate["Next"] == "Sleep"
    retried = {e for r in orchestrate["Retry"] for e in r["ErrorEquals"]}
    assert retried and all(e.startswith("Lambda.") for e in retried)  # service errors only
    catches = {e: c["Next"] for c in orchestrate["Catch"] for e in c["ErrorEquals"]}
    assert catches == {
        "States.Timeout": "TimerDue",
        "durable.Succeeded": "Finished",
        "durable.Failed": "WorkflowFailed",
        "durable.HandOver": "NextGeneration",
        "States.ALL": "PrepareRecovery",
    }
    assert [c["ErrorEquals"] for c in orchestrate["Catch"]][-1] == ["States.ALL"]  # last
    assert states["Sleep"]["SecondsPath"] == "$.decision.wait_seconds"
    assert states["Sleep"]["Next"] == "Orchestrate"
    # A timed-out park returns no decision: TimerDue counts its iteration itself, and the
    # orchestrator knows the execution's age (it hands over well inside the one-year limit).
    from durable.runtime.aws_loop import EVENTS_PER_ITERATION

    due = states["TimerDue"]["Parameters"]["decision"]
    assert due["events.$"] == f"States.MathAdd($.decision.events, {EVENTS_PER_ITERATION})"
    assert orchestrate["Parameters"]["Payload"]["started.$"] == "$$.Execution.StartTime"
    # Every decision the loop builds has the shape the orchestrator answers with.
    from durable.runtime.aws_config import default_decision
    from durable.runtime.aws_loop import LoopDecision

    shape = set(LoopDecision("continue").output())
    assert set(default_decision()) == shape
    for name in ("TimerDue", "PrepareRecovery", "NextGeneration"):
        built = {k.removesuffix(".$") for k in states[name]["Parameters"]["decision"]}
        assert built == shape, name


def test_table_matches_the_store() -> None:
    from durable.store.dynamodb import GSI_NAME

    table = _resources("AWS::DynamoDB::Table")["Table"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["TimeToLiveSpecification"]["Enabled"] is True
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert [g["IndexName"] for g in table["GlobalSecondaryIndexes"]] == [GSI_NAME]


def test_bucket_is_encrypted_and_private() -> None:
    bucket = _resources("AWS::S3::Bucket")["PayloadBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_functions_share_one_package_and_name_real_handlers() -> None:
    import durable.runtime.aws as aws

    functions = _resources("AWS::Lambda::Function")
    assert set(functions) == {
        "OrchestratorFunction",
        "ActivityFunction",
        "ApiFunction",
    }
    for fn in functions.values():
        props = fn["Properties"]
        assert props["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}
        module, _, name = props["Handler"].rpartition(".")
        assert module == "durable.runtime.aws" and callable(getattr(aws, name))
    groups = _resources("AWS::Logs::LogGroup")
    assert len(groups) == 4 and all("RetentionInDays" in g["Properties"] for g in groups.values())


def test_api_uses_iam_auth() -> None:
    methods = _resources("AWS::ApiGateway::Method")
    assert methods and all(
        m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in methods.values()
    )
    assert {"ApiUrl", "TableName", "StateMachineArn"} <= set(_template()["Outputs"])
