"""``durable synth``, ``deploy`` and ``destroy``: the real bundle, the real template, moto CloudFormation.

The bundle is built once per session (pip fetches manylinux wheels from the
package registry; a failure to reach it fails the test with pip's message).
Deploys run against moto in-process: change sets, S3, IAM, Lambda, DynamoDB,
Step Functions and API Gateway are all moto's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.cloudformation.models import Change, ChangeSet
from typer.testing import CliRunner

from durable.cli import app
from durable.deploy import stack as stack_module
from durable.runtime.aws_config import registry_modules

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "remind_user.py"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account

runner = CliRunner()


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def synth_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    result = _cli("synth", "--module", str(EXAMPLE), "--out", str(out))
    assert result.exit_code == 0, (
        "durable synth failed (pip must reach the package registry to fetch the manylinux "
        f"wheels): {result.stderr}"
    )
    return out


@pytest.fixture(scope="module")
def bundle_names(synth_out: Path) -> list[str]:
    with zipfile.ZipFile(synth_out / "bundle.zip") as archive:
        return archive.namelist()


# ----------------------------------------------------------------------------- synth


def test_packaged_infra_equals_the_source() -> None:
    for name in ("template.yaml", "statemachine.asl.json"):
        packaged = ROOT / "durable" / "_infra" / name
        assert packaged.read_bytes() == (ROOT / "infra" / name).read_bytes(), (
            f"durable/_infra/{name} is stale: cp infra/{name} durable/_infra/"
        )


def test_synth_writes_the_template(synth_out: Path) -> None:
    assert (synth_out / "template.yaml").read_bytes() == (ROOT / "infra/template.yaml").read_bytes()
    asl = (synth_out / "statemachine.asl.json").read_bytes()
    assert asl == (ROOT / "infra/statemachine.asl.json").read_bytes()


def test_bundle_holds_code_registry_and_linux_wheels(
    synth_out: Path, bundle_names: list[str]
) -> None:
    names = set(bundle_names)
    assert {
        "durable/__init__.py",
        "durable/runtime/aws.py",
        "durable/_infra/template.yaml",
        "examples/__init__.py",
        "examples/remind_user.py",
        "durable_registry.json",
    } <= names
    assert any(
        re.fullmatch(r"pydantic_core/_pydantic_core\.cpython-311-x86_64-linux-gnu\.so", n)
        for n in names
    ), "pydantic_core's compiled module for Lambda (CPython 3.11, x86_64) is missing"
    assert any(n.startswith("aws_lambda_powertools/") for n in names)
    assert any(n.startswith("aws_xray_sdk/") for n in names)  # the handlers' Tracer
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"boto3", "botocore", "s3transfer", "typer", "rich"}
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    with zipfile.ZipFile(synth_out / "bundle.zip") as archive:
        registry = json.loads(archive.read("durable_registry.json"))
    assert registry == {
        "modules": ["examples.remind_user"],
        "workflows": {"remind_user": "examples.remind_user"},
        "python": "3.11",
        "architecture": "x86_64",
    }


def test_bundle_imports_with_only_the_lambda_runtime(synth_out: Path, tmp_path: Path) -> None:
    """Extracted, the bundle plus boto3 (what Lambda provides) imports the handlers and workflows."""
    task_root = tmp_path / "task"
    with zipfile.ZipFile(synth_out / "bundle.zip") as archive:
        archive.extractall(task_root)
    provided = tmp_path / "runtime"
    provided.mkdir()
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"):
        module = __import__(name)
        source = Path(module.__file__ or "")
        target = source.parent if source.name == "__init__.py" else source
        (provided / target.name).symlink_to(target)
    script = f"""
import sys
sys.path[:0] = [{str(task_root)!r}, {str(provided)!r}]
from durable.runtime import aws, aws_config
settings = aws_config.Settings.from_env()
assert settings.modules == ("examples.remind_user",), settings.modules
from durable.loader import load_modules
from durable.workflow import get_workflow
load_modules(list(settings.modules))
assert get_workflow("remind_user").name == "remind_user"
allowed = ({str(task_root)!r}, {str(provided)!r})
outside = sorted(
    m.__name__ for m in list(sys.modules.values())
    if getattr(m, "__file__", None) and "site-packages" in m.__file__
    and not m.__file__.startswith(allowed)
)
assert not outside, outside
print("ok", aws.__file__)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLE_", "PYTHON"))}
    env |= {"AWS_DEFAULT_REGION": REGION, "POWERTOOLS_TRACE_DISABLED": "true"}
    done = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok " + str(task_root))


def test_registry_is_read_from_a_file(tmp_path: Path) -> None:
    registry = tmp_path / "durable_registry.json"
    assert registry_modules(registry) == ()
    registry.write_text('{"modules": ["a.b", "c"], "workflows": {}}')
    assert registry_modules(registry) == ("a.b", "c")


def test_bundle_takes_local_imports_of_a_plain_folder(tmp_path: Path) -> None:
    from durable.deploy.bundle import _user_sources
    from durable.loader import load_module

    folder = tmp_path / "flows_plain"
    folder.mkdir()
    (folder / "deploy_helpers_x.py").write_text("VALUE = 1\n")
    (folder / "unused_x.py").write_text("VALUE = 2\n")
    (folder / "deploy_flow_x.py").write_text(
        "import json\nimport deploy_helpers_x\nfrom durable import workflow\n\n"
        "@workflow\ndef deploy_flow_x(ctx, n: int):\n    return n + deploy_helpers_x.VALUE\n"
        "    yield\n"
    )
    module = load_module(folder / "deploy_flow_x.py")
    assert sorted(_user_sources([module])) == ["deploy_flow_x.py", "deploy_helpers_x.py"]


def test_synth_bad_module_is_one_line(tmp_path: Path) -> None:
    result = _cli("synth", "--module", str(tmp_path / "missing.py"), "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: workflow file {tmp_path / 'missing.py'} does not exist"
    )
    assert not (tmp_path / "template.yaml").exists()
    empty = tmp_path / "no_flows_here.py"
    empty.write_text("X = 1\n")
    result = _cli("synth", "--module", str(empty), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "define no @workflow" in result.stderr
    result = _cli("synth", "--module", str(EXAMPLE), "--arch", "sparc", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "--arch must be one of x86_64, arm64" in result.stderr


# ----------------------------------------------------------------------------- deploy


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # moto 5.2.5 executes a change set without recomputing the stack's outputs (a stack
    # created by a change set would report none): fix the emulator, as real CloudFormation does.
    apply = ChangeSet.apply

    def apply_with_outputs(change_set: Any) -> None:
        apply(change_set)
        change_set.stack.template_dict = change_set.template_dict
        change_set.stack.output_map = change_set.stack._create_output_map()

    monkeypatch.setattr(ChangeSet, "apply", apply_with_outputs)
    # moto diffs a change set's template only; CloudFormation also sees new parameter values
    # (the resources using them change): report those as a change of the stack too.
    diff = ChangeSet.diff

    def diff_with_parameters(change_set: Any) -> list[Any]:
        changes = diff(change_set)
        if changes or change_set.change_set_type != "UPDATE":
            return changes
        before = {k: str(v) for k, v in change_set.stack.parameters.items()}
        after = {k: str(v) for k, v in (change_set.parameters or {}).items()}
        if any(before.get(k) != v for k, v in after.items()):
            return [Change("Modify", "Parameters", "AWS::CloudFormation::Stack")]
        return changes

    monkeypatch.setattr(ChangeSet, "diff", diff_with_parameters)
    with mock_aws():
        yield


# moto's CloudFormation does not create some of the template's types (BucketPolicy, ...).
moto_skips = pytest.mark.filterwarnings("ignore:Tried to parse AWS.* not supported by moto")


def _sha(synth_out: Path) -> str:
    return hashlib.sha256((synth_out / "bundle.zip").read_bytes()).hexdigest()[:32]


def _stack_status(name: str) -> str | None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    try:
        return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])
    except botocore.exceptions.ClientError:
        return None


@moto_skips
@pytest.mark.usefixtures("aws")
def test_deploy_update_destroy(synth_out: Path) -> None:
    bundle = str(synth_out / "bundle.zip")
    first = _cli("deploy", "--stack", "flows", "--region", REGION, "--bundle", bundle)
    assert first.exit_code == 0, first.stderr
    api_url = first.stdout.strip()
    assert re.fullmatch(r"https://\w+\.execute-api\.us-east-1\.amazonaws\.com/prod", api_url)
    assert "CREATE_COMPLETE" in first.stderr
    assert f"creating the deployment bucket durable-deploy-{ACCOUNT}-{REGION}" in first.stderr
    assert "stack flows created" in first.stderr
    assert _stack_status("flows") == "CREATE_COMPLETE"

    cfn = boto3.client("cloudformation", region_name=REGION)
    params = {
        p["ParameterKey"]: p["ParameterValue"]
        for p in cfn.describe_stacks(StackName="flows")["Stacks"][0]["Parameters"]
    }
    assert params["CodeBucket"] == f"durable-deploy-{ACCOUNT}-{REGION}"
    assert params["Architecture"] == "x86_64"
    assert params["PythonRuntime"] == "python3.11"
    s3 = boto3.client("s3", region_name=REGION)
    code = s3.get_object(Bucket=params["CodeBucket"], Key=params["CodeKey"])["Body"].read()
    assert code == (synth_out / "bundle.zip").read_bytes()
    functions = boto3.client("lambda", region_name=REGION).list_functions()["Functions"]
    assert {f["Handler"] for f in functions} == {
        "durable.runtime.aws.orchestrator_handler",
        "durable.runtime.aws.activity_handler",
        "durable.runtime.aws.api_handler",
    }

    second = _cli("deploy", "--stack", "flows", "--region", REGION, "--bundle", bundle)
    assert second.exit_code == 0, second.stderr
    assert second.stdout.strip() == api_url
    assert "stack flows unchanged" in second.stderr or "stack flows updated" in second.stderr
    assert _stack_status("flows") in ("CREATE_COMPLETE", "UPDATE_COMPLETE")

    gone = _cli("destroy", "--stack", "flows", "--region", REGION)
    assert gone.exit_code == 0, gone.stderr
    assert "stack flows deleted" in gone.stderr
    assert "kept (DeletionPolicy Retain): AWS::DynamoDB::Table" in gone.stderr
    assert _stack_status("flows") in (None, "DELETE_COMPLETE")

    again = _cli("destroy", "--stack", "flows", "--region", REGION)
    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: no stack named flows in {REGION}"


def _parameters(stack: str) -> dict[str, str]:
    cfn = boto3.client("cloudformation", region_name=REGION)
    found = cfn.describe_stacks(StackName=stack)["Stacks"][0]["Parameters"]
    return {p["ParameterKey"]: p["ParameterValue"] for p in found}


@moto_skips
@pytest.mark.usefixtures("aws")
def test_parameters_are_set_on_deploy_and_kept_by_the_next_one(synth_out: Path) -> None:
    bundle = str(synth_out / "bundle.zip")
    tuned = ("-p", "InlineSeconds=5", "--parameter", "ActivityTimeout = 120")
    first = _cli("deploy", "--stack", "tuned", "--bundle", bundle, *tuned)
    assert first.exit_code == 0, first.stderr
    assert _parameters("tuned")["InlineSeconds"] == "5"
    assert _parameters("tuned")["ActivityTimeout"] == "120"

    again = _cli("deploy", "--stack", "tuned", "--bundle", bundle, "-p", "HandOverEvents=5000")
    assert again.exit_code == 0, again.stderr
    assert "stack tuned updated" in again.stderr
    kept = _parameters("tuned")
    assert (kept["InlineSeconds"], kept["ActivityTimeout"]) == ("5", "120")
    assert kept["HandOverEvents"] == "5000"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("InlineSecs=5", "the template has no parameter 'InlineSecs'; it has: ActivityMemory"),
        ("CodeKey=x.zip", "parameter CodeKey is set by deploy itself"),
        ("InlineSeconds", "--parameter wants KEY=VALUE, got 'InlineSeconds'"),
    ],
)
def test_a_bad_parameter_is_refused_before_anything_is_built(given: str, message: str) -> None:
    result = _cli("deploy", "--stack", "x", "--module", str(EXAMPLE), "-p", given)

    assert result.exit_code != 0
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0  # the error alone: nothing was built


@moto_skips
@pytest.mark.usefixtures("aws")
def test_deploy_into_a_given_bucket(synth_out: Path) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="team-artifacts")
    result = _cli(
        "deploy",
        "--stack",
        "mine",
        "--bundle",
        str(synth_out / "bundle.zip"),
        "--bucket",
        "team-artifacts",
    )
    assert result.exit_code == 0, result.stderr
    keys = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="team-artifacts")
    assert [o["Key"] for o in keys["Contents"]] == [f"durable/mine/{_sha(synth_out)}.zip"]
    assert "creating the deployment bucket" not in result.stderr


@pytest.mark.usefixtures("aws")
def test_deploy_bad_module_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    result = _cli("deploy", "--stack", "s", "--module", str(missing))
    assert result.exit_code == 2
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: workflow file {missing} does not exist"
    )
    broken = tmp_path / "broken_flow.py"
    broken.write_text("def oops(:\n")
    result = _cli("deploy", "--stack", "s", "--module", str(broken))
    assert result.exit_code == 2
    assert "error: syntax error in" in result.stderr
    assert _stack_status("s") is None


@pytest.mark.usefixtures("aws")
def test_deploy_bad_bundle_and_conflicting_options(tmp_path: Path, synth_out: Path) -> None:
    not_zip = tmp_path / "bundle.zip"
    not_zip.write_text("hello")
    result = _cli("deploy", "--stack", "s", "--bundle", str(not_zip))
    assert result.exit_code == 2
    assert "is not a bundle written by `durable synth`" in result.stderr
    result = _cli(
        "deploy", "--stack", "s", "--bundle", str(synth_out / "bundle.zip"), "--module", "x.py"
    )
    assert result.exit_code == 2
    assert "--bundle excludes --module, --python and --arch" in result.stderr


def test_no_credentials_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, synth_out: Path
) -> None:
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bundle = str(synth_out / "bundle.zip")
    result = _cli("deploy", "--stack", "s", "--region", REGION, "--bundle", bundle)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no AWS credentials found")
    assert len(result.stderr.strip().splitlines()) == 1
    result = _cli("destroy", "--stack", "s")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no AWS region: pass --region or set AWS_REGION"


# ----------------------------------------------------------------------------- deployer policy

# API operations whose IAM action has another name, or needs none.
_IAM_ACTION = {
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "PutPublicAccessBlock"): "s3:PutBucketPublicAccessBlock",
    ("sts", "GetCallerIdentity"): None,  # allowed for every principal
}
# What CloudFormation does with the deployer's credentials, per resource type of the template.
_RESOURCE_SERVICES = {
    "AWS::DynamoDB::Table": "dynamodb:CreateTable",
    "AWS::S3::Bucket": "s3:CreateBucket",
    "AWS::S3::BucketPolicy": "s3:PutBucketPolicy",
    "AWS::Logs::LogGroup": "logs:CreateLogGroup",
    "AWS::IAM::Role": "iam:CreateRole",
    "AWS::Lambda::Function": "lambda:CreateFunction",
    "AWS::Lambda::EventInvokeConfig": "lambda:PutFunctionEventInvokeConfig",
    "AWS::Lambda::Permission": "lambda:AddPermission",
    "AWS::StepFunctions::StateMachine": "states:CreateStateMachine",
    "AWS::ApiGateway::RestApi": "apigateway:POST",
    "AWS::ApiGateway::Resource": "apigateway:POST",
    "AWS::ApiGateway::Method": "apigateway:PUT",
    "AWS::ApiGateway::Deployment": "apigateway:POST",
    "AWS::ApiGateway::Stage": "apigateway:POST",
}


def _policy_actions() -> set[str]:
    policy = json.loads((ROOT / "deploy" / "deployer-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Resource"], statement
        found = statement["Action"]
        actions.update([found] if isinstance(found, str) else found)
    return actions


def _deploy_calls() -> set[tuple[str, str]]:
    """(service, API operation) of every boto3 call in durable/deploy/stack.py."""
    clients = {"cfn": "cloudformation", "s3": "s3", "sts": "sts"}
    tree = ast.parse((ROOT / "durable" / "deploy" / "stack.py").read_text())
    calls: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
        if name in clients:
            service = clients[name]
            client = boto3.client(service, region_name=REGION)  # type: ignore[call-overload]
            api = client.meta.method_to_api_mapping.get(node.attr)
            if api is not None:
                calls.add((service, api))
    return calls


def test_deployer_policy_covers_every_call() -> None:
    actions = _policy_actions()
    for action in actions:
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z*]+", action), action
    calls = _deploy_calls()
    assert ("cloudformation", "CreateChangeSet") in calls
    assert ("cloudformation", "ExecuteChangeSet") in calls
    assert ("s3", "PutObject") in calls
    assert len(calls) >= 12, calls
    for service, api in sorted(calls):
        needed = _IAM_ACTION.get((service, api), f"{service}:{api}")
        if needed is not None:
            assert needed in actions, f"deploy/deployer-policy.json lacks {needed}"
    template = (ROOT / "infra" / "template.yaml").read_text()
    for resource_type in set(re.findall(r"Type: (AWS::\w+::\w+)", template)):
        assert resource_type in _RESOURCE_SERVICES, f"policy not checked for {resource_type}"
        assert _RESOURCE_SERVICES[resource_type] in actions, resource_type
    assert "iam:PassRole" in actions


def test_pass_role_is_scoped() -> None:
    policy = json.loads((ROOT / "deploy" / "deployer-policy.json").read_text())
    passing = [s for s in policy["Statement"] if "iam:PassRole" in s["Action"]]
    assert len(passing) == 1
    condition = passing[0]["Condition"]["StringEquals"]["iam:PassedToService"]
    assert set(condition) <= {"lambda.amazonaws.com", "states.amazonaws.com"}
    assert passing[0]["Resource"] != "*"
    # Only the log-delivery actions (no resource-level permissions) get "*", and only
    # through CloudFormation.
    for statement in policy["Statement"]:
        if statement["Resource"] == "*":
            assert all(a.startswith("logs:") for a in statement["Action"]), statement
            called_via = statement["Condition"]["ForAnyValue:StringEquals"]["aws:CalledVia"]
            assert called_via == "cloudformation.amazonaws.com"


def test_stack_module_has_no_unlisted_clients() -> None:
    """Every boto3 client the deployer makes is one the policy test maps."""
    source = (ROOT / "durable" / "deploy" / "stack.py").read_text()
    assert set(re.findall(r'client\("(\w+)"\)', source)) == {"cloudformation", "s3", "sts"}
    assert stack_module.__all__


# ----------------------------------------------------------------------------- failures


@pytest.fixture
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _stack(status: str) -> dict[str, Any]:
    return {
        "Stacks": [
            {
                "StackName": "flows",
                "StackStatus": status,
                "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
            }
        ]
    }


def _event(event_id: str, logical: str, status: str, reason: str = "") -> dict[str, Any]:
    return {
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/flows/1",
        "EventId": event_id,
        "StackName": "flows",
        "LogicalResourceId": logical,
        "ResourceType": "AWS::CloudFormation::Stack" if logical == "flows" else "AWS::S3::Bucket",
        "Timestamp": datetime.now(UTC) + timedelta(seconds=5),
        "ResourceStatus": status,
        "ResourceStatusReason": reason,
    }


@pytest.mark.usefixtures("fake_credentials")
def test_failed_delete_names_the_first_failed_resource() -> None:
    """CloudFormation answers (botocore's Stubber at the AWS boundary): the delete fails."""
    from durable.deploy.stack import Deployer, StackFailedError

    deployer = Deployer("flows", region=REGION, poll=0)
    stub = Stubber(deployer.cfn)
    events = {
        "StackEvents": [
            _event("3", "flows", "DELETE_FAILED", "The following resource(s) failed to delete"),
            _event(
                "2",
                "PayloadBucket",
                "DELETE_FAILED",
                "The bucket you tried to delete\n is not empty",
            ),
            _event("1", "flows", "DELETE_IN_PROGRESS", "User Initiated"),
        ]
    }
    stub.add_response("describe_stacks", _stack("CREATE_COMPLETE"), {"StackName": "flows"})
    stub.add_response("describe_stack_resources", {"StackResources": []}, {"StackName": "flows"})
    stub.add_response("delete_stack", {}, {"StackName": "flows"})
    stub.add_response("describe_stacks", _stack("DELETE_FAILED"), {"StackName": "flows"})
    stub.add_response("describe_stack_events", events, {"StackName": "flows"})
    stub.add_response("describe_stack_events", events, {"StackName": "flows"})
    with stub, pytest.raises(StackFailedError) as failed:
        deployer.destroy()
    assert str(failed.value) == (
        "stack flows delete failed (DELETE_FAILED): PayloadBucket (AWS::S3::Bucket): "
        "The bucket you tried to delete is not empty"
    )
    stub.assert_no_pending_responses()


@pytest.mark.usefixtures("fake_credentials")
def test_deploy_refuses_a_stack_that_failed_to_create(synth_out: Path) -> None:
    from durable.deploy.bundle import open_bundle
    from durable.deploy.stack import Deployer, DeployError

    deployer = Deployer("flows", region=REGION, poll=0)
    stub = Stubber(deployer.cfn)
    stub.add_response("describe_stacks", _stack("ROLLBACK_COMPLETE"), {"StackName": "flows"})
    with stub, pytest.raises(DeployError, match=r"run `durable destroy --stack flows` first"):
        deployer.deploy(open_bundle(synth_out / "bundle.zip"))


def test_the_readme_names_every_parameter_deploy_can_set() -> None:
    from durable.deploy.stack import DEPLOY_SETS, template_parameters

    readme = (ROOT / "README.md").read_text()
    tunable = template_parameters() - DEPLOY_SETS
    assert "InlineSeconds" in tunable
    assert [p for p in sorted(tunable) if f"`{p}`" not in readme] == []
