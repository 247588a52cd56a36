"""Run the real AWS artefacts without AWS: moto in-process, our handlers behind its Lambda.

Follows ../shared/AWS-TESTING.md:

* ``mock_aws`` with ``execute_state_machine`` (moto's ASL interpreter runs the
  loop) and Lambda without Docker;
* ``LambdaSimpleBackend.invoke`` replaced: the function's ``Handler`` string is
  imported and called with the payload, its ``Environment`` applied, a raised
  exception reported as ``x-amz-function-error: Unhandled``; asynchronous
  invocations (``InvocationType: Event``, which moto's ASL interpreter would
  silently drop, so it is added to the accepted parameters) run on a thread,
  once the orchestration that made them has returned (Lambda takes tens of
  milliseconds or more to start an asynchronous invocation; the orchestrator
  parks within a few, so an outcome posted before the park is not the case
  to measure, and without this what it costs would depend on thread timing);
* state machines created by CloudFormation routed to the executing backend;
* three more gaps of moto 5.2.5 closed at the boundary: ``states:startExecution``
  tasks pass their parameters to boto3 as spelled in the ASL (``StateMachineArn``
  where boto3 wants ``stateMachineArn``), so they are re-cased; a function's
  environment keeps a ``Number`` parameter as an int, so values are made strings
  as Lambda does; moto DynamoDB does not serialize writes to an item, so
  ``tests/moto_dynamodb.py`` does. (A fourth, moto's list-form ``Fn::Sub``
  turning ``$$`` into ``$``, is avoided in the template by the one-argument form.)
* time: a :class:`VirtualClock` the handlers use (an execution's start, which
  the orchestrator gets from ``$$.Execution.StartTime``, is shifted into it); Wait states advance it
  instead of sleeping (a fan-in wait of ``FAN_IN_SECONDS`` also sleeps, since
  what is posted meanwhile decides what the next step takes), and a parked Orchestrate task (its token left on the
  instance) that times out advances it by the task's timeout after
  ``park_real_seconds`` of real waiting (long enough for a test to deliver an
  event through the API while the loop is parked).

Only the AWS boundary is replaced. Faults are injected at that boundary too:
``fail_after`` makes the Lambda runtime lose a handler's response after the
handler ran (as when the sandbox dies on the way back), ``crash_before`` fails
an invocation without running the handler (a sandbox that timed out or ran
out of memory), and ``duplicate`` delivers an invocation twice (Lambda's
at-least-once delivery). ``before_call`` runs just before a handler (to make
something happen at that exact point, e.g. an event racing a park).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import threading
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_callback,
    state_task_service_lambda,
    state_task_service_sfn,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function

from durable.runtime import aws_config
from durable.runtime.aws_loop import FAN_IN_SECONDS
from durable.runtime.clock import VirtualClock
from tests.moto_dynamodb import serialized_moto_dynamodb

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "infra" / "template.yaml"
MODULES = (
    "examples.remind_user,examples.fan_out_fan_in,examples.human_approval,"
    "examples.order_saga,examples.monitor,tests.aws_flows"
)


@dataclass
class Invocation:
    function: str
    payload: Any
    error: str | None = None
    result: Any = None
    asynchronous: bool = False
    done: bool = False
    seconds: float = 0.0
    memory_mb: int = 128
    thread: int = 0
    """The thread the handler ran on (tests/aws_costs.py attributes AWS requests by it)."""


@dataclass
class _FakeContext:
    """What the Lambda runtime hands a handler (the attributes powertools reads)."""

    function_name: str
    timeout_seconds: int
    memory_limit_in_mb: int = 512
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "test"

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000)


class AwsHarness:
    """moto with our handlers behind Lambda; see the module docstring.

    Args:
        park_real_seconds: real seconds a parked task waits before its timeout fires.
        hand_over_events: the stack's ``HandOverEvents`` parameter (default: the template's).
        inline_seconds: the stack's ``InlineSeconds`` parameter (default: the template's);
            0 makes every activity round park the loop (asynchronous invocations).

    Everything is created from ``infra/template.yaml`` through moto CloudFormation.
    """

    def __init__(
        self,
        *,
        park_real_seconds: float = 30.0,
        hand_over_events: int | None = None,
        inline_seconds: float | None = None,
    ) -> None:
        self.clock = VirtualClock()
        self.hand_over_events = hand_over_events
        self.inline_seconds = inline_seconds
        self.park_real_seconds = park_real_seconds
        self.invocations: list[Invocation] = []
        self.fail_after: Callable[[str, Any], bool] = lambda function, payload: False
        self.duplicate: Callable[[str, Any], bool] = lambda function, payload: False
        self.before_call: Callable[[str, Any], None] = lambda function, payload: None
        self.crash_before: Callable[[str, Any], bool] = lambda function, payload: False
        self.outputs: dict[str, str] = {}
        self._lock = threading.RLock()
        self._function_locks: dict[str, threading.Lock] = {}
        self._start_offsets: dict[str, timedelta] = {}
        self._threads: list[threading.Thread] = []
        self._orchestrating: dict[str, threading.Event] = {}
        """Per instance, set once its latest orchestrator invocation has returned."""
        self._stack = contextlib.ExitStack()
        self.state_machine_arn = ""
        self.functions: dict[str, str] = {}
        self.skipped_resources: list[str] = []
        """Resource types of the template that moto's CloudFormation does not create."""

    # ------------------------------------------------------------------ setup

    def __enter__(self) -> AwsHarness:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(timeout=10)
        self._stack.close()
        aws_config.reset()

    def _start(self) -> None:
        env = {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        self._stack.enter_context(mock.patch.dict(os.environ, env))
        self._stack.enter_context(
            mock_aws(
                config={
                    "stepfunctions": {"execute_state_machine": True},
                    "lambda": {"use_docker": False},
                }
            )
        )
        # DynamoDB serializes writes to an item; moto does not (see tests/moto_dynamodb.py).
        self._stack.enter_context(serialized_moto_dynamodb())
        harness = self

        def invoke(
            backend: Any, name: str, qualifier: Any, body: Any, headers: Any, resp: Any
        ) -> bytes:
            return harness._invoke(backend, name, qualifier, body, headers, resp)

        self._stack.enter_context(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))
        bindings = state_task_service_lambda._SUPPORTED_API_PARAM_BINDINGS
        self._stack.enter_context(
            mock.patch.dict(bindings, {"invoke": {*bindings["invoke"], "InvocationType"}})
        )

        def skip_wait(function: Any, env: Any, wait_seconds: int) -> None:
            if 0 < wait_seconds <= FAN_IN_SECONDS:
                time.sleep(wait_seconds)  # a fan-in wait: what gets posted meanwhile matters
            harness.clock.advance_to(harness.clock.now() + timedelta(seconds=wait_seconds))

        self._stack.enter_context(
            mock.patch.object(wait_function.WaitFunction, "_wait_interval", skip_wait)
        )

        def park_wait(service: Any, timeout_seconds: int, endpoint: Any) -> Any:
            outcome = endpoint.wait(timeout=min(timeout_seconds, harness.park_real_seconds))
            if outcome is None:  # timed out: the timer the parked task waited for is due
                harness.clock.advance_to(harness.clock.now() + timedelta(seconds=timeout_seconds))
            return outcome

        self._stack.enter_context(
            mock.patch.object(
                state_task_service_callback.StateTaskServiceCallback,
                "_wait_for_task_token_timeout",
                park_wait,
            )
        )
        # moto 5.2.5 passes states:startExecution's parameters to boto3 as written in the
        # ASL (StateMachineArn, ...) where boto3 wants stateMachineArn: fix the emulator.
        sfn_task = state_task_service_sfn.StateTaskServiceSfn
        normalise = sfn_task._normalise_parameters

        def camel_case(
            task: Any,
            parameters: dict[str, Any],
            boto_service_name: str | None = None,
            service_action_name: str | None = None,
        ) -> None:
            normalise(task, parameters, boto_service_name, service_action_name)
            for key in list(parameters):
                parameters[key[:1].lower() + key[1:]] = parameters.pop(key)

        self._stack.enter_context(mock.patch.object(sfn_task, "_normalise_parameters", camel_case))
        aws_config.configure(clock=self.clock)
        self._create_stack()

    def _create_stack(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._create_stack_recorded()
        for warning in caught:
            text = str(warning.message)
            if "not supported by moto" in text:
                if text.split()[3] not in self.skipped_resources:
                    self.skipped_resources.append(text.split()[3])
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )

    def _create_stack_recorded(self) -> None:
        import moto.stepfunctions.models as sfn_models
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        # CloudFormation creates state machines in the non-executing backend (AWS-TESTING.md).
        self._stack.enter_context(
            mock.patch.object(sfn_models, "stepfunctions_backends", stepfunctions_parser_backends)
        )
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="durable-code")
        s3.put_object(Bucket="durable-code", Key="bundle.zip", Body=_zip())
        cfn = boto3.client("cloudformation")
        cfn.create_stack(
            StackName="durable",
            TemplateBody=TEMPLATE_PATH.read_text(),
            Parameters=[
                {"ParameterKey": "CodeBucket", "ParameterValue": "durable-code"},
                {"ParameterKey": "CodeKey", "ParameterValue": "bundle.zip"},
                {"ParameterKey": "WorkflowModules", "ParameterValue": MODULES},
                *(
                    {"ParameterKey": key, "ParameterValue": str(value)}
                    for key, value in (
                        ("HandOverEvents", self.hand_over_events),
                        ("InlineSeconds", self.inline_seconds),
                    )
                    if value is not None
                ),
            ],
            Capabilities=["CAPABILITY_IAM"],
        )
        stack = cfn.describe_stacks(StackName="durable")["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack not created: {stack['StackStatus']}")
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        self.state_machine_arn = self.outputs["StateMachineArn"]
        resources = cfn.describe_stack_resources(StackName="durable")["StackResources"]
        for resource in resources:
            if resource.get("ResourceType") == "AWS::Lambda::Function":
                kind = resource["LogicalResourceId"].removesuffix("Function").lower()
                self.functions[kind] = resource["PhysicalResourceId"]
        # Every function's variables stay set between invocations too: os.environ is one
        # per process here (one per sandbox on Lambda), and a thread of the state machine
        # or a waker reading it while another invocation restores it must not see a gap.
        lambda_client = boto3.client("lambda")
        shared: dict[str, str] = {}
        for name in self.functions.values():
            shared.update(_env(_FunctionView(name, lambda_client)))
        self._stack.enter_context(mock.patch.dict(os.environ, shared))

    # ------------------------------------------------------------------ Lambda

    def _invoke(
        self, backend: Any, name: str, qualifier: Any, body: Any, headers: Any, resp: Any
    ) -> bytes:
        fn = backend.get_function(name, qualifier)
        text = body.decode() if isinstance(body, bytes) else (body or "{}")
        payload = json.loads(text or "{}")
        if headers.get("X-Amz-Invocation-Type") == "Event":
            with self._lock:
                caller = self._orchestrating.get(str(payload.get("instance_id")))
            thread = threading.Thread(
                target=self._call_once_returned, args=(caller, fn, payload), daemon=True
            )
            self._threads.append(thread)
            thread.start()
            return b""
        ok, result = self._call(fn, payload, False)
        if not ok:
            resp["x-amz-function-error"] = "Unhandled"
        return json.dumps(result).encode()

    def _call_once_returned(
        self, caller: threading.Event | None, fn: Any, payload: Any
    ) -> tuple[bool, Any]:
        """An asynchronous invocation, started once the orchestration that made it returned."""
        if caller is not None:
            caller.wait(timeout=60)
        return self._call(fn, payload, True)

    def _call(self, fn: Any, payload: Any, asynchronous: bool) -> tuple[bool, Any]:
        times = 2 if self.duplicate(self._kind(fn.function_name), payload) else 1
        outcome: tuple[bool, Any] = (True, None)
        for _ in range(times):
            outcome = self._call_once(fn, payload, asynchronous)
        return outcome

    def _call_once(self, fn: Any, payload: Any, asynchronous: bool) -> tuple[bool, Any]:
        module_name, _, attr = fn.handler.rpartition(".")
        handler = getattr(importlib.import_module(module_name), attr)
        payload = self._in_virtual_time(payload)
        record = Invocation(
            fn.function_name, payload, asynchronous=asynchronous, thread=threading.get_ident()
        )
        # One invocation of a function at a time, as in a Lambda sandbox (module globals are
        # per process there). Functions differ: the orchestrator waits on the activity function.
        # Every function's environment is in os.environ from the start (see _create_stack).
        returned = threading.Event()
        with self._function_lock(fn.function_name), _environ(_env(fn)):
            if self._kind(fn.function_name) == "orchestrator" and isinstance(payload, dict):
                with self._lock:
                    self._orchestrating[str(payload.get("instance_id"))] = returned
            self.invocations.append(record)
            context = _FakeContext(fn.function_name, int(fn.timeout or 3))
            record.memory_mb = int(getattr(fn, "memory_size", 128) or 128)
            started = time.monotonic()
            try:
                self.before_call(self._kind(fn.function_name), payload)
                if self.crash_before(self._kind(fn.function_name), payload):
                    raise TimeoutError("injected: the sandbox died before the handler ran")
                result = handler(payload, context)
                record.result = result
                if self.fail_after(self._kind(fn.function_name), payload):
                    raise RuntimeError("injected: the sandbox died after the handler returned")
            except Exception as exc:
                record.error = f"{type(exc).__name__}: {exc}"
                return False, {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            finally:
                record.seconds = time.monotonic() - started
                record.done = True
                returned.set()
        return True, result

    def _in_virtual_time(self, payload: Any) -> Any:
        """The Orchestrate payload with the execution's start in virtual time.

        moto stamps ``$$.Execution.StartTime`` with the real time; the handlers
        live in virtual time, so the start is shifted by how far virtual time
        was ahead when the execution first ran its Orchestrate state.
        """
        if not isinstance(payload, dict) or not isinstance(payload.get("started"), str):
            return payload
        real = payload["started"]
        with self._lock:
            offset = self._start_offsets.setdefault(real, self.clock.skipped)
        started = datetime.fromisoformat(real.replace("Z", "+00:00")) + offset
        return {**payload, "started": started.isoformat()}

    def _function_lock(self, function_name: str) -> threading.Lock:
        with self._lock:
            return self._function_locks.setdefault(function_name, threading.Lock())

    def answers(self) -> list[str]:
        """How each orchestrator invocation answered its task (sleep, park, ...), in order."""
        return [
            str(answer)
            for i in self.invocations
            if self._kind(i.function) == "orchestrator" and isinstance(i.result, dict)
            for answer in i.result.get("answers", [])
        ]

    def states_entered(self) -> Counter[str]:
        """How often each state was entered, over every execution (the billed transitions)."""
        sfn = boto3.client("stepfunctions")
        entered: Counter[str] = Counter()
        for execution in self.executions():
            pages = sfn.get_paginator("get_execution_history").paginate(
                executionArn=execution["executionArn"]
            )
            for page in pages:
                for event in page["events"]:
                    if event["type"].endswith("StateEntered"):
                        entered[event["stateEnteredEventDetails"]["name"]] += 1
        return entered

    def invocation_counts(self) -> Counter[str]:
        return Counter(self._kind(i.function) for i in self.invocations)

    def _kind(self, function_name: str) -> str:
        for kind, name in self.functions.items():
            if name == function_name:
                return kind
        return function_name

    # ------------------------------------------------------------------ API and waiting

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the API function as API Gateway's REST proxy integration would."""
        event = _proxy_event(method, path, body)
        ok, result = self._call(
            _FunctionView(self.functions["api"], boto3.client("lambda")), event, False
        )
        if not ok:
            raise RuntimeError(f"api handler failed: {result}")
        return int(result["statusCode"]), json.loads(result["body"])

    def start(self, workflow: str, input: Any, instance_id: str | None = None) -> str:
        body: dict[str, Any] = {"input": input}
        if instance_id is not None:
            body["instance_id"] = instance_id
        status, answer = self.api("POST", f"/workflows/{workflow}", body)
        assert status == 202, answer
        return str(answer["instance_id"])

    def executions(self) -> list[dict[str, Any]]:
        sfn = boto3.client("stepfunctions")
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.state_machine_arn
        )
        return [e for page in pages for e in page["executions"]]

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached in {timeout}s")
            time.sleep(0.05)

    def wait_for_executions(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until no execution is RUNNING; return them all."""

        def settled() -> bool:
            found = self.executions()
            return bool(found) and all(e["status"] != "RUNNING" for e in found)

        self.wait_until(settled, timeout, "all executions finished")
        return self.executions()

    def status(self, instance_id: str) -> dict[str, Any]:
        code, body = self.api("GET", f"/instances/{_quote(instance_id)}")
        assert code == 200, body
        return dict(body)

    def store(self) -> Any:
        """The store as the functions see it (built from their environment)."""
        fn = _FunctionView(self.functions["api"], boto3.client("lambda"))
        with self._lock, _environ(_env(fn)):
            return aws_config.services().store

    def history_kinds(self, instance_id: str) -> list[str]:
        return [e.kind for e in self.store().history(instance_id)]


@dataclass
class _FunctionView:
    """Enough of a moto function for :meth:`AwsHarness._call` when the harness calls it."""

    function_name: str
    client: Any
    handler: str = ""
    environment_vars: dict[str, str] = field(default_factory=dict)
    timeout: int = 30
    memory_size: int = 128

    def __post_init__(self) -> None:
        config = self.client.get_function_configuration(FunctionName=self.function_name)
        self.handler = config["Handler"]
        self.environment_vars = config.get("Environment", {}).get("Variables", {})
        self.timeout = config.get("Timeout", 30)
        self.memory_size = config.get("MemorySize", 128)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _proxy_event(method: str, path: str, body: Any) -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "api.example.com"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "domainName": "api.example.com",
            "requestId": "test",
            "identity": {"sourceIp": "127.0.0.1"},
            "accountId": "123456789012",
            "apiId": "api",
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "the handlers run in-process in tests")
    return buffer.getvalue()


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ, then put back just those keys.

    Unlike ``mock.patch.dict``, which clears the whole environment before restoring it,
    this never leaves a moment in which another thread (the state machine's, a waker,
    the test polling boto3) finds ``AWS_DEFAULT_REGION`` and the rest missing.
    """
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _env(fn: Any) -> dict[str, str]:
    """A function's environment as Lambda gives it: strings (moto keeps a Number's int)."""
    return {k: str(v) for k, v in (fn.environment_vars or {}).items()}
