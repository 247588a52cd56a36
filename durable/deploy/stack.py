"""Creating, updating and deleting the stack: what ``durable deploy`` and ``destroy`` do.

Deploy::

    credentials, region, account (sts)
    deployment bucket: --bucket, or durable-deploy-<account>-<region> (created if absent)
    bundle -> s3://bucket/durable/<stack>/<sha256>.zip (the key changes only with the code)
    change set (CREATE or UPDATE) -> wait -> execute -> stack events until the stack settles
    outputs (ApiUrl)

Every AWS call goes through one boto3 session; ``deploy/deployer-policy.json``
grants exactly what these calls (and CloudFormation acting for the caller) need.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from rich.console import Console
from rich.text import Text

from durable.deploy.bundle import Bundle, template_text
from durable.errors import DurableError

__all__ = ["DeployError", "DeployResult", "Deployer", "StackFailedError"]

_SETTLED = ("_COMPLETE", "_FAILED")
_BAD = ("FAILED", "ROLLBACK")
_RETAINED = re.compile(r"^  (\w+):\n(?:    .*\n)*?    DeletionPolicy: Retain$", re.MULTILINE)
"""Logical ids of the template's resources that outlive the stack."""
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


class DeployError(DurableError):
    """The stack could not be deployed or destroyed (one line, for the CLI)."""


class StackFailedError(DeployError):
    """CloudFormation ran the change but the stack ended failed or rolled back."""


@dataclass
class DeployResult:
    """What a deploy did."""

    stack: str
    action: str
    """``CREATE``, ``UPDATE`` or ``NONE`` (nothing to change)."""
    outputs: dict[str, str] = field(default_factory=dict)
    code: str = ""
    """``s3://bucket/key`` of the code package."""


DEPLOY_SETS = frozenset({"CodeBucket", "CodeKey", "Architecture", "PythonRuntime"})
"""Template parameters ``deploy`` sets from the bundle."""


def template_parameters() -> frozenset[str]:
    """The names of the template's parameters (its top-level ``Parameters`` block)."""
    names: set[str] = set()
    inside = False
    for line in template_text().splitlines():
        if not line.startswith(" ") and line.strip():
            inside = line.rstrip() == "Parameters:"
        elif inside and (found := re.fullmatch(r"  ([A-Za-z0-9]+):\s*", line)):
            names.add(found.group(1))
    return frozenset(names)


def check_parameters(tuned: Mapping[str, str]) -> None:
    """Raise DeployError naming a parameter ``deploy`` cannot set (unknown, or set by it)."""
    known = template_parameters()
    for name in tuned:
        if name in DEPLOY_SETS:
            raise DeployError(f"parameter {name} is set by deploy itself (from the bundle)")
        if name not in known:
            choices = ", ".join(sorted(known - DEPLOY_SETS))
            raise DeployError(f"the template has no parameter {name!r}; it has: {choices}")


class Deployer:
    """Deploys and destroys one stack in one region.

    Args:
        stack: the CloudFormation stack name.
        region: the region (default: the AWS configuration's).
        console: where progress goes (stderr in the CLI).
        poll: seconds between polls of CloudFormation.
    """

    def __init__(
        self,
        stack: str,
        *,
        region: str | None = None,
        console: Console | None = None,
        poll: float = 5.0,
    ) -> None:
        self.stack = stack
        self.console = console or Console(stderr=True, highlight=False)
        self.poll = poll
        try:
            session = boto3.session.Session(region_name=region)
            credentials = session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
            raise DeployError(f"bad AWS configuration: {exc}") from None
        if session.region_name is None:
            raise DeployError("no AWS region: pass --region or set AWS_REGION")
        if credentials is None:
            raise DeployError(
                "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or run `aws configure`)"
            )
        self.region: str = session.region_name
        self._session = session
        self.cfn: Any = session.client("cloudformation")
        self.s3: Any = session.client("s3")

    # ------------------------------------------------------------------ deploy

    def deploy(
        self,
        bundle: Bundle,
        *,
        bucket: str | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> DeployResult:
        """Upload ``bundle`` and create or update the stack with it.

        ``parameters`` set the template's tunable parameters (``InlineSeconds``,
        ``ActivityTimeout``, ...). On an update, those not given keep the
        stack's current values; on a create, the template's defaults.

        Raises:
            DeployError: a parameter the template does not have, or one of
                those ``deploy`` sets itself (the code and its platform).
        """
        tuned = dict(parameters or {})
        check_parameters(tuned)
        described = self._describe()
        existing = None if described is None else str(described["StackStatus"])
        if existing is not None and existing == "ROLLBACK_COMPLETE":
            raise DeployError(
                f"stack {self.stack} failed to create and is in ROLLBACK_COMPLETE: "
                f"run `durable destroy --stack {self.stack}` first"
            )
        if existing not in (None, "REVIEW_IN_PROGRESS") and not existing.endswith(_SETTLED):
            raise DeployError(f"stack {self.stack} is busy ({existing}); try again when it settles")
        bucket = bucket or self._default_bucket()
        key = f"durable/{self.stack}/{bundle.sha256[:32]}.zip"
        self._upload(bundle.path, bucket, key)
        code = f"s3://{bucket}/{key}"
        action = "CREATE" if existing is None or existing == "REVIEW_IN_PROGRESS" else "UPDATE"
        values = {
            **tuned,
            "CodeBucket": bucket,
            "CodeKey": key,
            "Architecture": bundle.arch,
            "PythonRuntime": f"python{bundle.python}",
        }
        # Parameters the stack has now (an older template's may differ) keep their values.
        current = {p["ParameterKey"] for p in (described or {}).get("Parameters", [])}
        kept = current - set(values) if action == "UPDATE" else set()
        change_set = self._change_set(action, values, kept)
        if change_set is None:
            self.console.print(f"stack {self.stack} is up to date: no changes")
            return DeployResult(self.stack, "NONE", self._outputs(), code)
        started = datetime.now(UTC)
        self._call("execute the change set", self.cfn.execute_change_set, ChangeSetName=change_set)
        status = self._follow(started)
        if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
            raise StackFailedError(
                f"stack {self.stack} {action.lower()} failed ({status}): {self._cause(started)}"
            )
        return DeployResult(self.stack, action, self._outputs(), code)

    def _default_bucket(self) -> str:
        sts = self._session.client("sts")
        account = self._call("read the account id", sts.get_caller_identity)["Account"]
        name = f"durable-deploy-{account}-{self.region}"
        try:
            self.s3.head_bucket(Bucket=name)
            return name
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise DeployError(
                    f"cannot use the deployment bucket {name}: {_message(exc)}"
                ) from None
        self.console.print(f"creating the deployment bucket {name}")
        create: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._call("create the deployment bucket", self.s3.create_bucket, **create)
        self._call(
            "block public access to the deployment bucket",
            self.s3.put_public_access_block,
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        return name

    def _upload(self, path: Path, bucket: str, key: str) -> None:
        size = path.stat().st_size
        self.console.print(
            f"uploading the code package ({size / 1e6:.1f} MB) to s3://{bucket}/{key}"
        )
        self._call(
            "upload the code package",
            self.s3.put_object,
            Bucket=bucket,
            Key=key,
            Body=path.read_bytes(),
        )

    def _change_set(
        self, action: str, parameters: dict[str, str], kept: Collection[str] = ()
    ) -> str | None:
        """Create a change set and wait for it; its id, or None when nothing changes.

        ``kept`` parameters keep the stack's current values (``UsePreviousValue``).
        """
        name = f"durable-{datetime.now(UTC):%Y%m%d%H%M%S}"
        try:
            created = self._create_change_set(name, action, parameters, kept)
        except DeployError as exc:
            if action == "UPDATE" and any(text in str(exc) for text in _NO_CHANGES):
                return None  # refused at once rather than as a FAILED change set: same thing
            raise
        change_set = str(created["Id"])
        self.console.print(f"{action.lower()} {self.stack} in {self.region}: change set {name}")
        while True:
            found = self._call(
                "describe the change set",
                self.cfn.describe_change_set,
                ChangeSetName=change_set,
                StackName=self.stack,
            )
            status = found.get("Status", "")
            if status == "CREATE_COMPLETE":
                if action == "UPDATE" and not found.get("Changes"):
                    self._discard(change_set)
                    return None
                return change_set
            if status == "FAILED":
                reason = str(found.get("StatusReason", ""))
                if any(text in reason for text in _NO_CHANGES):
                    self._discard(change_set)
                    return None
                raise DeployError(f"change set for stack {self.stack} failed: {reason}")
            time.sleep(self.poll)

    def _create_change_set(
        self, name: str, action: str, parameters: dict[str, str], kept: Collection[str]
    ) -> Any:
        return self._call(
            "create a change set",
            self.cfn.create_change_set,
            StackName=self.stack,
            ChangeSetName=name,
            ChangeSetType=action,
            TemplateBody=template_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
            + [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(kept)],
            Capabilities=["CAPABILITY_IAM"],
            Description="durable deploy",
        )

    def _discard(self, change_set: str) -> None:
        self._call(
            "delete the empty change set",
            self.cfn.delete_change_set,
            ChangeSetName=change_set,
            StackName=self.stack,
        )

    # ------------------------------------------------------------------ destroy

    def destroy(self) -> list[str]:
        """Delete the stack; the physical ids of the resources it keeps (retained)."""
        if self._stack_status() is None:
            raise DeployError(f"no stack named {self.stack} in {self.region}")
        retained = self._retained()
        started = datetime.now(UTC)
        self._call("delete the stack", self.cfn.delete_stack, StackName=self.stack)
        status = self._follow(started, deleting=True)
        if status != "DELETE_COMPLETE":
            raise StackFailedError(
                f"stack {self.stack} delete failed ({status}): {self._cause(started)}"
            )
        return retained

    def _retained(self) -> list[str]:
        keep = set(_RETAINED.findall(template_text()))
        listed = self._call(
            "list the stack's resources", self.cfn.describe_stack_resources, StackName=self.stack
        )
        return [
            f"{r['ResourceType']} {r.get('PhysicalResourceId', '')}"
            for r in listed.get("StackResources", [])
            if r.get("LogicalResourceId") in keep
        ]

    # ------------------------------------------------------------------ shared

    def _stack_status(self) -> str | None:
        found = self._describe()
        return None if found is None else str(found["StackStatus"])

    def _describe(self) -> dict[str, Any] | None:
        """The stack's description, or None when there is none (or it was deleted)."""
        try:
            found = self.cfn.describe_stacks(StackName=self.stack)["Stacks"]
        except botocore.exceptions.ClientError as exc:
            if "does not exist" in _message(exc):
                return None
            raise DeployError(f"cannot read stack {self.stack}: {_message(exc)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise DeployError(f"cannot reach CloudFormation in {self.region}: {exc}") from None
        if not found or found[0]["StackStatus"] == "DELETE_COMPLETE":
            return None
        return dict(found[0])

    def _follow(self, since: datetime, *, deleting: bool = False) -> str:
        """Print the stack's new events until it settles; its final status."""
        seen: set[str] = set()
        while True:
            status = self._stack_status()
            for event in reversed(self._events()):
                if event["EventId"] in seen or event["Timestamp"] < since.replace(microsecond=0):
                    continue
                seen.add(event["EventId"])
                self.console.print(_event_line(event))
            if status is None:
                return "DELETE_COMPLETE" if deleting else "GONE"
            if status.endswith(_SETTLED) and "IN_PROGRESS" not in status:
                return status
            time.sleep(self.poll)

    def _events(self) -> list[dict[str, Any]]:
        try:
            page = self.cfn.describe_stack_events(StackName=self.stack)
        except botocore.exceptions.ClientError as exc:
            if "does not exist" in _message(exc):
                return []
            raise DeployError(
                f"cannot read the events of stack {self.stack}: {_message(exc)}"
            ) from None
        return list(page.get("StackEvents", []))

    def _cause(self, since: datetime) -> str:
        """The first failed resource's reason since ``since``."""
        failed = [
            e
            for e in reversed(self._events())
            if e["Timestamp"] >= since.replace(microsecond=0)
            and str(e.get("ResourceStatus", "")).endswith("FAILED")
            and "cancelled" not in str(e.get("ResourceStatusReason", "")).lower()
            and e.get("LogicalResourceId") != self.stack
        ]
        if not failed:
            return "see the stack's events"
        first = failed[0]
        return (
            f"{first['LogicalResourceId']} ({first.get('ResourceType', '')}): "
            f"{' '.join(str(first.get('ResourceStatusReason', 'no reason given')).split())}"
        )

    def _outputs(self) -> dict[str, str]:
        found = self._call(
            "read the stack's outputs", self.cfn.describe_stacks, StackName=self.stack
        )
        outputs = found["Stacks"][0].get("Outputs", [])
        return {str(o["OutputKey"]): str(o["OutputValue"]) for o in outputs}

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except botocore.exceptions.NoCredentialsError:
            raise DeployError("no AWS credentials found") from None
        except botocore.exceptions.ClientError as exc:
            raise DeployError(f"cannot {what}: {_message(exc)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise DeployError(f"cannot {what}: {exc}") from None


def _message(exc: botocore.exceptions.ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Message") or error.get("Code") or exc)


def _event_line(event: dict[str, Any]) -> Text:
    status = str(event.get("ResourceStatus", ""))
    style = "red" if any(bad in status for bad in _BAD) else "green" if "COMPLETE" in status else ""
    line = Text(f"{event['Timestamp']:%H:%M:%S} ")
    line.append(f"{status:<22}", style=style)
    line.append(f" {event.get('LogicalResourceId', '')} ({event.get('ResourceType', '')})")
    reason = event.get("ResourceStatusReason")
    if reason and any(bad in status for bad in _BAD):
        line.append(f": {' '.join(str(reason).split())}", style="red")
    return line
