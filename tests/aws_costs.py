"""What durable costs on AWS, next to hand-written Step Functions and Lambda durable functions.

``python -m tests.aws_costs`` (``--quick``: without the 100-step workloads; ``--write
infra/COSTS.md``: store the report too) runs each workload end to end in moto
(tests/aws_harness.py: the stack from infra/template.yaml, moto's Step Functions
executing the state machine, our handlers behind its Lambda), and the hand-written
state machines of tests/handwritten/ the same way, then prints markdown tables.

Counted exactly, from the run: Lambda invocations per function; Step Functions
state transitions (every ``*StateEntered`` event of the executions' histories, per
state name: what Standard workflows bill); DynamoDB, S3, Lambda and Step Functions
API requests, each billed to the Lambda invocation that made it (the API calls to
Step Functions and the ``lambda:Invoke`` calls cost nothing themselves; an invoked
function is billed as the invocation it starts).

Who made a request: the invocation running on the thread that made it, or, on a
thread the function's own code started (the orchestrator's pool of synchronous
activity invokes, the thread a timed activity runs on), the invocation whose code
started that thread. Threads the emulator starts (an execution of the state
machine, an asynchronous invocation) belong to no invocation; a DynamoDB or S3
request made outside every invocation is reported as unattributed (there is none).

Estimated:

* DynamoDB capacity units from the size of each item in DynamoDB's wire format (a
  slight overestimate of DynamoDB's own item size): a PutItem costs 1 write unit per
  KB; an UpdateItem or DeleteItem 1 (their items are under 1 KB here); every item of
  a TransactWriteItems twice that (a ConditionCheck as one 1 KB write); GetItem and
  BatchGetItem 1 read unit per 4 KB strongly consistent (``ConsistentRead``), half
  eventually consistent, twice in a transaction; a Query by the total size of the
  items it returned (a ProjectionExpression makes this an underestimate).
* Lambda GB-seconds: the in-process time under moto is not what Lambda bills, so
  each invocation is billed ``BASE_MS`` plus ``REQUEST_MS`` per AWS request it made
  (counted), plus, for a synchronous ``lambda:Invoke``, the whole billed duration of
  the invocation it waited for: the orchestrator waiting on an activity pays for the
  activity's time a second time. Requests on the invocation's own thread follow one
  another. Requests from a thread pool its code started (``ThreadPoolExecutor``) run
  as many at a time as the pool has threads, each on the thread free first, as a pool
  hands out work: a round of activities invoked at once, a thread each, costs its
  longest invocation, not their sum (the emulator's own timing is not used: it runs
  one invocation of a function at a time). A single thread it started runs its
  requests one after another. The invocation waits for its pools and threads, so
  these follow one another. Times the function's memory size from the template.
  Business logic is taken as free on both sides (the same code runs in either). The
  measured in-process time is printed for reference.
* Lambda durable functions: not emulated. Each workload is mapped onto the
  operations its SDK would record (1 to start the execution, 1 per step, 1 per
  wait), one invocation to start plus one per wait that suspends it, ``BASE_MS`` per
  invocation plus ``REQUEST_MS`` per checkpoint, at the activity function's memory,
  1 KB of checkpoint data written per operation and retained for the default 14 days.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3

from tests.aws_harness import ROOT, AwsHarness, Invocation, _zip

ASL = ROOT / "infra" / "statemachine.asl.json"
HANDWRITTEN = ROOT / "tests" / "handwritten"

# us-east-1 list prices (x86, on-demand), unchanged from this file's first version and
# checked against stored copies of https://aws.amazon.com/step-functions/pricing/ ($0.0250
# per 1,000 transitions, retries included) and of DynamoDB's on-demand rates after the
# November 2024 cut ($0.625 / $0.125 per million write / read request units).
PRICES = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "sfn_transition": 0.025 / 1e3,
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "s3_put": 0.005 / 1e3,
    "s3_get": 0.0004 / 1e3,
}

# Lambda durable functions, us-east-1. The stored copy of the AWS page does not show the
# durable rates (they are rendered client-side); these are its figures as transcribed
# by LDF_SOURCE and quoted alike by several write-ups of the launch.
LDF_PRICES = {
    "operation": 8.00 / 1e6,
    "gb_written": 0.25,
    "gb_month_retained": 0.15,
}
LDF_SOURCE = (
    "https://aws.amazon.com/lambda/pricing/ as transcribed in "
    "https://raw.githubusercontent.com/api-evangelist/aws-lambda/refs/heads/main/plans/"
    "aws-lambda-plans-pricing.yml ('Durable Functions operations ... $8.00/M')"
)
LDF_BYTES_PER_OPERATION = 1024
LDF_RETENTION_DAYS = 14

BASE_MS = 20.0
"""Billed milliseconds of one warm invocation before any AWS request (assumption)."""
REQUEST_MS = 10.0
"""Billed milliseconds per AWS request an invocation makes (assumption: in-region round trip)."""

_WRITE_ONE = {"UpdateItem", "DeleteItem"}
_GB = 1024**3


def _size(item: dict[str, Any]) -> int:
    return len(json.dumps(item, separators=(",", ":")).encode())


def _kb(item: dict[str, Any]) -> int:
    return max(1, math.ceil(_size(item) / 1024))


_READS = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem")
"""Read requests: the local-step target counts transactions (writes)."""

_EMULATOR = ("botocore.", "boto3.", "moto.")
"""Modules whose threads are AWS's own (started while serving a request), not a function's."""
_CALL_ONCE = AwsHarness._call_once.__code__
"""The frame that runs one Lambda invocation in the harness."""


@dataclass(eq=False)
class Request:
    """One AWS request as the model bills it."""

    name: str
    """``service:Operation``, e.g. ``dynamodb:GetItem``."""
    owner: Invocation | None
    """The invocation billed for it (None: made outside every invocation)."""
    thread: int
    fork: object | None = None
    """The pool (``ThreadPoolExecutor``) or single thread of the owner's it was made from;
    None: the owner's own thread."""
    synchronous: bool = False
    """A ``lambda:Invoke`` that waits for the function to finish."""
    child: Invocation | None = None
    """The invocation a synchronous ``lambda:Invoke`` ran."""
    wru: float = 0.0
    rru: float = 0.0


@dataclass
class Meter:
    """Records the AWS requests made through boto3's default session while it is installed.

    Each request is billed to an invocation of ``invocations`` (the harness's list):
    the one running on the thread that made it, else the one whose code started that
    thread (see the module docstring). Installing also wraps ``threading.Thread.start``
    to learn which threads a function's code starts.
    """

    invocations: list[Invocation] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)
    first_invocation: int = 0
    """Index in ``invocations`` of the first one started while installed."""
    last_invocation: int = 0
    on: bool = False
    errors: list[str] = field(default_factory=list)
    _handlers: list[tuple[str, Any]] = field(default_factory=list)
    _owners: dict[threading.Thread, tuple[Invocation, object]] = field(default_factory=dict)
    _patch: Any = None

    def install(self) -> None:
        events = boto3._get_default_session().events
        self._handlers = [
            ("before-parameter-build.dynamodb", self._before_dynamodb),
            ("after-call.dynamodb", self._after_dynamodb),
            ("before-parameter-build.s3", self._before),
            ("before-parameter-build.sfn", self._before),
            ("before-parameter-build.lambda", self._before_lambda),
            ("after-call.lambda", self._after_lambda),
        ]
        self._handlers = [(name, self._guarded(handler)) for name, handler in self._handlers]
        for name, handler in self._handlers:
            events.register(name, handler)
        meter, original = self, threading.Thread.start

        def start(thread: threading.Thread) -> None:
            meter._adopt(thread, sys._getframe(1))
            original(thread)

        self._patch = mock.patch.object(threading.Thread, "start", start)
        self._patch.start()
        self.first_invocation = len(self.invocations)
        self.on = True

    def uninstall(self) -> None:
        # Clients made meanwhile hold copies of the session's handlers: switch them off too.
        self.on = False
        self.last_invocation = len(self.invocations)
        events = boto3._get_default_session().events
        for name, handler in self._handlers:
            events.unregister(name, handler)
        self._handlers = []
        if self._patch is not None:
            self._patch.stop()
            self._patch = None

    def _guarded(self, handler: Callable[..., None]) -> Callable[..., None]:
        """``handler``, its errors kept in ``errors`` instead of failing the request."""

        def guarded(**kwargs: Any) -> None:
            try:
                handler(**kwargs)
            except Exception as exc:  # a bug in the meter must not change what the run does
                self.errors.append(f"{handler.__name__}: {type(exc).__name__}: {exc}")

        return guarded

    def check(self) -> None:
        """Raise if a handler of the meter failed (the run's counts are then incomplete)."""
        if self.errors:
            raise RuntimeError(f"the meter failed: {self.errors[:3]}")

    # -------------------------------------------------------------- results

    def billed_invocations(self) -> list[Invocation]:
        """The invocations started while the meter was installed."""
        return self.invocations[self.first_invocation : self.last_invocation]

    def requests(self) -> Counter[str]:
        """Requests billed to an invocation, per ``service:Operation``."""
        return Counter(r.name for r in self.log if r.owner is not None)

    def unattributed(self) -> Counter[str]:
        """DynamoDB and S3 requests made outside every invocation (none expected)."""
        return Counter(
            r.name for r in self.log if r.owner is None and r.name.startswith(("dynamodb:", "s3:"))
        )

    def units(self) -> tuple[float, float]:
        """DynamoDB write and read units of every request recorded."""
        return sum(r.wru for r in self.log), sum(r.rru for r in self.log)

    # -------------------------------------------------------------- attribution

    def _current(self) -> Invocation | None:
        me = threading.get_ident()
        for record in reversed(self.invocations):
            if record.thread == me and not record.done:
                return record
        owner = self._owners.get(threading.current_thread())
        return owner[0] if owner else None

    def _adopt(self, thread: threading.Thread, frame: Any) -> None:
        """Bill ``thread`` to the invocation whose code starts it (not the emulator's threads)."""
        owner = self._current()
        if not self.on or owner is None:
            return
        fork: object = thread
        while frame is not None and frame.f_code is not _CALL_ONCE:
            module = str(frame.f_globals.get("__name__", ""))
            if module.startswith(_EMULATOR) or module == "tests.aws_harness":
                return  # started while AWS serves a request (a state machine, an Event invoke)
            if (
                frame.f_code.co_name == "_adjust_thread_count"
                and module == "concurrent.futures.thread"
            ):
                fork = frame.f_locals.get("self", thread)  # one pool: its threads run alongside
            frame = frame.f_back
        self._owners[thread] = (owner, fork)

    def _record(self, name: str, context: dict[str, Any]) -> Request | None:
        if not self.on:
            return None
        owner = self._current()
        fork = None
        if owner is not None and owner.thread != threading.get_ident():
            fork = self._owners[threading.current_thread()][1]
        request = Request(name, owner, threading.get_ident(), fork)
        self.log.append(request)
        context["cost_model_request"] = request
        return request

    # -------------------------------------------------------------- handlers

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        self._record(f"{'stepfunctions' if service == 'states' else service}:{model.name}", context)

    def _before_lambda(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        request = self._record(f"lambda:{model.name}", context)
        if request is not None and model.name == "Invoke":
            request.synchronous = params.get("InvocationType", "RequestResponse") == (
                "RequestResponse"
            )
            context["cost_model_invocations"] = len(self.invocations)

    def _after_lambda(self, context: dict[str, Any], **_: Any) -> None:
        request = context.get("cost_model_request")
        if request is None or not request.synchronous:
            return
        # A synchronous invocation runs on the thread that invoked it (tests/aws_harness.py).
        for record in self.invocations[context["cost_model_invocations"] :]:
            if record.thread == request.thread:
                request.child = record
                break

    def _before_dynamodb(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        request = self._record(f"dynamodb:{model.name}", context)
        if request is None:
            return
        op = model.name
        consistent = bool(params.get("ConsistentRead")) or (
            op == "BatchGetItem"
            and any(bool(t.get("ConsistentRead")) for t in params["RequestItems"].values())
        )
        context["cost_model_consistent"] = consistent
        if op == "PutItem":
            request.wru += _kb(params["Item"])
        elif op in _WRITE_ONE:
            request.wru += 1
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                kind, body = next(iter(entry.items()))
                request.wru += 2 * (_kb(body["Item"]) if kind == "Put" else 1)
        elif op == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for item in requests:
                    put = item.get("PutRequest")
                    request.wru += _kb(put["Item"]) if put else 1

    def _after_dynamodb(
        self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        request = context.get("cost_model_request")
        if request is None:
            return
        op = model.name
        factor = 1.0 if context.get("cost_model_consistent") else 0.5

        def units(size: int) -> float:
            return factor * max(1, math.ceil(size / 4096))

        if op == "GetItem":
            request.rru += units(_size(parsed["Item"]) if "Item" in parsed else 0)
        elif op in ("Query", "Scan"):
            request.rru += units(sum(_size(item) for item in parsed.get("Items", [])))
        elif op == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                request.rru += sum(units(_size(i)) for i in items)
        elif op == "TransactGetItems":
            for response in parsed.get("Responses", []):
                request.rru += 2 * max(1, math.ceil(_size(response.get("Item", {})) / 4096))


@dataclass
class Billed:
    """One Lambda invocation as the model bills it (see the module docstring)."""

    kind: str
    memory_mb: int
    aws_requests: int
    measured_seconds: float
    request_ms: float = 0.0
    """Time of its own requests (a pool of threads counted as its slowest thread)."""
    waiting_ms: float = 0.0
    """Time waiting for the synchronous invocations it made (their whole billed duration)."""
    wru: float = 0.0
    rru: float = 0.0
    """DynamoDB units of its requests."""

    @property
    def seconds(self) -> float:
        return (BASE_MS + self.request_ms + self.waiting_ms) / 1000

    @property
    def gb_seconds(self) -> float:
        return self.seconds * self.memory_mb / 1024


def _makespan(costs: Sequence[tuple[float, float]], width: int) -> tuple[float, float]:
    """How long ``width`` threads take over ``costs`` (request ms, waiting ms), in order.

    Each request goes to the thread free first, as a pool hands out work; the result is
    the busiest thread's (request ms, waiting ms).
    """
    lanes = [(0.0, 0.0)] * max(1, width)
    for request_ms, waiting_ms in costs:
        free = min(range(len(lanes)), key=lambda i: sum(lanes[i]))
        lanes[free] = (lanes[free][0] + request_ms, lanes[free][1] + waiting_ms)
    return max(lanes, key=sum)


def bill(
    invocations: Sequence[Invocation],
    log: Sequence[Request],
    kind: Callable[[str], str] = str,
) -> list[Billed]:
    """Bill ``invocations`` by the requests in ``log`` (``kind`` names a function)."""
    made: dict[int, list[Request]] = {}
    for request in log:
        if request.owner is not None:
            made.setdefault(id(request.owner), []).append(request)
    busy: dict[int, tuple[float, float]] = {}

    def duration(record: Invocation) -> tuple[float, float]:
        """(request ms, waiting ms) of ``record`` beyond ``BASE_MS``."""
        if id(record) in busy:
            return busy[id(record)]
        own = [0.0, 0.0]
        forks: dict[int, tuple[object, list[tuple[float, float]]]] = {}
        for request in made.get(id(record), []):
            waited = 0.0
            if request.synchronous and request.child is not None:
                waited = BASE_MS + sum(duration(request.child))
            if request.fork is None:
                own[0] += REQUEST_MS
                own[1] += waited
            else:
                forks.setdefault(id(request.fork), (request.fork, []))[1].append(
                    (REQUEST_MS, waited)
                )
        for fork, costs in forks.values():
            request_ms, waiting_ms = _makespan(costs, getattr(fork, "_max_workers", 1))
            own[0] += request_ms
            own[1] += waiting_ms
        busy[id(record)] = (own[0], own[1])
        return busy[id(record)]

    billed = []
    for record in invocations:
        request_ms, waiting_ms = duration(record)
        own = made.get(id(record), [])
        billed.append(
            Billed(
                kind(record.function),
                record.memory_mb,
                len(own),
                record.seconds,
                request_ms,
                waiting_ms,
                sum(r.wru for r in own),
                sum(r.rru for r in own),
            )
        )
    return billed


@dataclass
class Costs:
    """What one run of a workload used, counted in moto."""

    name: str
    system: str
    steps: int
    invocations: list[Billed]
    states: Counter[str]
    requests: Counter[str]
    wru: float
    rru: float
    output: Any = None
    memory_mb: dict[str, int] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)
    """How the orchestrator answered its tasks, in order (durable only)."""
    timed_out: int = 0
    """Tasks that timed out (a park whose timer came due)."""
    unattributed: Counter[str] = field(default_factory=Counter)
    """DynamoDB and S3 requests made outside every invocation."""

    @property
    def lambda_invocations(self) -> Counter[str]:
        return Counter(i.kind for i in self.invocations)

    @property
    def transitions(self) -> int:
        return sum(self.states.values())

    @property
    def gb_seconds(self) -> float:
        return sum(i.gb_seconds for i in self.invocations)

    @property
    def measured_gb_seconds(self) -> float:
        return sum(i.measured_seconds * i.memory_mb / 1024 for i in self.invocations)

    def per_function(self) -> dict[str, Billed]:
        """Every function's invocations summed: requests, request and waiting time, memory."""
        totals: dict[str, Billed] = {}
        for i in self.invocations:
            total = totals.setdefault(i.kind, Billed(i.kind, i.memory_mb, 0, 0.0))
            total.aws_requests += i.aws_requests
            total.measured_seconds += i.measured_seconds
            total.request_ms += i.request_ms
            total.waiting_ms += i.waiting_ms
            total.wru += i.wru
            total.rru += i.rru
        return totals

    def function_gb_seconds(self, kind: str) -> float:
        return sum(i.gb_seconds for i in self.invocations if i.kind == kind)

    def count(self, prefix: str) -> int:
        return sum(n for k, n in self.requests.items() if k.startswith(prefix))

    def row(self) -> Row:
        return Row(
            system=self.system,
            workload=self.name,
            steps=self.steps,
            lambda_requests=len(self.invocations),
            gb_seconds=self.gb_seconds,
            transitions=self.transitions,
            dynamodb_requests=self.count("dynamodb:"),
            wru=self.wru,
            rru=self.rru,
            s3_puts=self.requests["s3:PutObject"],
            s3_gets=self.requests["s3:GetObject"],
        )


@dataclass
class Row:
    """One line of the comparison tables: units, then dollars at PRICES / LDF_PRICES."""

    system: str
    workload: str
    steps: int
    lambda_requests: float
    gb_seconds: float
    transitions: float = 0
    dynamodb_requests: float = 0
    wru: float = 0
    rru: float = 0
    s3_puts: float = 0
    s3_gets: float = 0
    durable_operations: float = 0
    durable_gb_written: float = 0
    durable_gb_months: float = 0

    def dollars(self) -> dict[str, float]:
        d = {
            "Lambda": self.lambda_requests * PRICES["lambda_request"]
            + self.gb_seconds * PRICES["lambda_gb_second"],
            "Step Functions": self.transitions * PRICES["sfn_transition"],
            "DynamoDB": self.wru * PRICES["dynamodb_wru"] + self.rru * PRICES["dynamodb_rru"],
            "S3": self.s3_puts * PRICES["s3_put"] + self.s3_gets * PRICES["s3_get"],
            "durable ops": self.durable_operations * LDF_PRICES["operation"]
            + self.durable_gb_written * LDF_PRICES["gb_written"]
            + self.durable_gb_months * LDF_PRICES["gb_month_retained"],
        }
        d["total"] = sum(d.values())
        return d

    @property
    def total(self) -> float:
        return self.dollars()["total"]

    def scaled(self, factor: float) -> Row:
        numbers = {
            k: v * factor
            for k, v in vars(self).items()
            if k not in ("system", "workload", "steps") and isinstance(v, int | float)
        }
        return Row(system=self.system, workload=self.workload, steps=self.steps, **numbers)


# ----------------------------------------------------------------------------- measuring


def _histories(executions: Iterable[str]) -> tuple[Counter[str], int]:
    """States entered over ``executions`` (the billed transitions), and tasks that timed out."""
    sfn = boto3.client("stepfunctions")
    states: Counter[str] = Counter()
    timed_out = 0
    for arn in executions:
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
            for event in page["events"]:
                if event["type"].endswith("StateEntered"):
                    states[event["stateEnteredEventDetails"]["name"]] += 1
                elif event["type"] == "TaskTimedOut":
                    timed_out += 1
    return states, timed_out


def _memory(h: AwsHarness) -> dict[str, int]:
    client = boto3.client("lambda")
    return {
        kind: int(client.get_function_configuration(FunctionName=name)["MemorySize"])
        for kind, name in h.functions.items()
    }


def _costs(name: str, system: str, steps: int, h: AwsHarness, meter: Meter, **more: Any) -> Costs:
    meter.check()
    wru, rru = meter.units()
    return Costs(
        name=name,
        system=system,
        steps=steps,
        invocations=bill(meter.billed_invocations(), meter.log, h._kind),
        requests=meter.requests(),
        wru=wru,
        rru=rru,
        unattributed=meter.unattributed(),
        **more,
    )


def measure(
    name: str,
    workflow: str,
    input: Any,
    *,
    steps: int = 0,
    inline_seconds: float | None = None,
) -> Costs:
    """Run one durable instance through the emulated stack and count what it used."""
    with AwsHarness(inline_seconds=inline_seconds) as h:
        meter = Meter(h.invocations)
        meter.install()
        try:
            instance_id = h.start(workflow, input)
            executions = h.wait_for_executions(300)
        finally:
            meter.uninstall()
        failed = [e["name"] for e in executions if e["status"] != "SUCCEEDED"]
        if failed:
            raise RuntimeError(f"{name}: executions did not succeed: {failed}")
        states, timed_out = _histories(e["executionArn"] for e in executions)
        if states != h.states_entered():
            raise AssertionError(f"{name}: {states} != the harness's {h.states_entered()}")
        return _costs(
            name,
            "durable",
            steps,
            h,
            meter,
            states=states,
            timed_out=timed_out,
            answers=h.answers(),
            output=h.status(instance_id).get("output"),
            memory_mb=_memory(h),
        )


def measure_handwritten(
    name: str, asl_file: str, functions: dict[str, str], input: Any, *, steps: int
) -> Costs:
    """Run a hand-written Standard state machine of tests/handwritten/ in the same emulator.

    ``functions`` maps each ``${Placeholder}`` of the ASL to the handler of the Lambda
    function it names; the functions get the durable stack's activity memory size.
    """
    with AwsHarness() as h:
        memory = _memory(h)
        iam, lam, sfn = boto3.client("iam"), boto3.client("lambda"), boto3.client("stepfunctions")
        role = iam.create_role(
            RoleName="handwritten",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {
                                "Service": ["lambda.amazonaws.com", "states.amazonaws.com"]
                            },
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        definition = (HANDWRITTEN / asl_file).read_text()
        for placeholder, handler in functions.items():
            arn = lam.create_function(
                FunctionName="handwritten-" + handler.rpartition(".")[2].replace("_", "-"),
                Runtime="python3.11",
                Role=role,
                Handler=handler,
                Code={"ZipFile": _zip()},
                MemorySize=memory["activity"],
                Timeout=30,
            )["FunctionArn"]
            definition = definition.replace("${" + placeholder + "}", arn)
        machine = sfn.create_state_machine(
            name=asl_file.removesuffix(".asl.json"), definition=definition, roleArn=role
        )["stateMachineArn"]
        meter = Meter(h.invocations)
        meter.install()
        try:
            execution = sfn.start_execution(
                stateMachineArn=machine,
                name=f"{machine.rpartition(':')[2]}-1",
                input=json.dumps(input),
            )["executionArn"]
            h.wait_until(
                lambda: sfn.describe_execution(executionArn=execution)["status"] != "RUNNING",
                300,
                f"{name} finished",
            )
        finally:
            meter.uninstall()
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "SUCCEEDED":
            raise RuntimeError(f"{name}: {described['status']}")
        states, timed_out = _histories([execution])
        return _costs(
            name,
            "hand-written",
            steps,
            h,
            meter,
            states=states,
            timed_out=timed_out,
            output=json.loads(described.get("output") or "null"),
            memory_mb={"functions": memory["activity"]},
        )


def lambda_durable_functions(name: str, *, steps: int, waits: int, memory_mb: int) -> Row:
    """The same workload on Lambda durable functions, by the mapping in the module docstring."""
    operations = 1 + steps + waits
    invocations = 1 + waits
    seconds = (invocations * BASE_MS + operations * REQUEST_MS) / 1000
    written = operations * LDF_BYTES_PER_OPERATION / _GB
    return Row(
        system="Lambda durable functions (estimate)",
        workload=name,
        steps=steps + waits,
        lambda_requests=invocations,
        gb_seconds=seconds * memory_mb / 1024,
        durable_operations=operations,
        durable_gb_written=written,
        durable_gb_months=written * LDF_RETENTION_DAYS / 30,
    )


# ----------------------------------------------------------------------------- what the design implies

_GOES_ON = ("sleep", "continue", "repark")
"""Answers that succeed the task: Sleep (0 s unless timers), then Orchestrate again."""


def loop_states(answers: Sequence[str], *, timed_out: int = 0) -> Counter[str]:
    """The states the loop enters, given the orchestrator's answers (AwsHarness.answers()).

    The execution starts in Orchestrate. ``sleep``, ``continue`` and ``repark``
    answer the task: Sleep, then Orchestrate. A ``park`` leaves the task waiting:
    woken by a post it goes on the same way, or it times out (``timed_out`` of
    them, counted from the history) into TimerDue, then Orchestrate. ``mail``
    answers nothing (the same invocation orchestrates again). The endings enter
    Finished or WorkflowFailed; a hand-over NextGeneration, HandOver, HandedOver,
    and the successor execution starts in Orchestrate. Failures of the
    orchestrator (PrepareRecovery and the rest) are not modelled: none happen here.
    """
    states: Counter[str] = Counter(Orchestrate=1)
    parks = 0
    for answer in answers:
        if answer in _GOES_ON:
            states.update(["Sleep", "Orchestrate"])
        elif answer == "park":
            parks += 1
        elif answer == "durable.Succeeded":
            states["Finished"] += 1
        elif answer == "durable.Failed":
            states["WorkflowFailed"] += 1
        elif answer == "durable.HandOver":
            states.update(["NextGeneration", "HandOver", "HandedOver", "Orchestrate"])
        elif answer != "mail":
            raise ValueError(f"unknown answer {answer!r}")
    states.update({"Sleep": parks - timed_out, "TimerDue": timed_out, "Orchestrate": parks})
    return +states


def handwritten_states(asl_file: str) -> Counter[str]:
    """The states a hand-written machine without branches enters: StartAt, then each Next."""
    asl = json.loads((HANDWRITTEN / asl_file).read_text())
    entered: Counter[str] = Counter()
    name = asl["StartAt"]
    while name is not None:
        entered[name] += 1
        state = asl["States"][name]
        if state["Type"] not in ("Task", "Wait", "Pass"):
            raise ValueError(f"{asl_file}: {name} is a {state['Type']}; the walk follows Next only")
        name = state.get("Next")
    return entered


# ----------------------------------------------------------------------------- workloads

ADA = {"name": "Ada", "email": "ada@example.com"}
REMIND_ANSWERS = ["sleep", "sleep", "durable.Succeeded"]
"""examples/remind_user.py on the loop: sleep 2 h; email (waited for), sleep a day; email
(waited for), done. Three orchestrator invocations, two activity invocations."""
CHAIN_ANSWERS = ["durable.Succeeded"]
"""A chain of activities the orchestrator waits for (or runs locally): one invocation, done."""


def remind_user() -> Costs:
    return measure("remind_user", "remind_user", ADA, steps=4)


def remind_user_handwritten() -> Costs:
    return measure_handwritten(
        "remind_user",
        "remind_user.asl.json",
        {"SendEmailFunctionArn": "tests.handwritten.functions.send_email"},
        ADA,
        steps=4,
    )


def dispatched_chain(n: int, *, inline_seconds: float | None = None) -> Costs:
    name = f"{n}-step chain, dispatched"
    if inline_seconds is not None:
        name += f", InlineSeconds={inline_seconds:g}"
    return measure(name, "aws_flows.remote_chain", n, steps=n, inline_seconds=inline_seconds)


def local_chain(n: int) -> Costs:
    return measure(f"{n}-step chain, local", "aws_flows.local_chain", n, steps=n)


def fan_out(n: int) -> Costs:
    return measure(f"{n}-way fan-out, dispatched", "aws_flows.fan_out", n, steps=n)


def chain10_handwritten() -> Costs:
    return measure_handwritten(
        "10-step chain",
        "chain10.asl.json",
        {"StepFunctionArn": "tests.handwritten.functions.square_step"},
        {"i": 0, "value": 0},
        steps=10,
    )


# ----------------------------------------------------------------------------- report


@dataclass
class Results:
    remind: Costs
    remind_hand: Costs
    chain10: Costs
    local10: Costs
    chain10_hand: Costs
    more: list[Costs] = field(default_factory=list)
    seconds: float = 0.0

    def ldf(self, costs: Costs, waits: int) -> Row:
        return lambda_durable_functions(
            costs.name.removesuffix(", dispatched"),
            steps=costs.steps - waits,
            waits=waits,
            memory_mb=self.remind.memory_mb["activity"],
        )

    def rows(self) -> list[Row]:
        rows = [
            self.remind.row(),
            self.remind_hand.row(),
            self.ldf(self.remind, waits=2),
            self.chain10.row(),
            self.local10.row(),
            self.chain10_hand.row(),
            self.ldf(self.chain10, waits=0),
        ]
        for costs in self.more:
            rows.append(costs.row())
            if costs.name.endswith("dispatched"):
                rows.append(self.ldf(costs, waits=0))
        return rows

    def local_step(self) -> tuple[tuple[int, int], dict[str, float], float, float] | None:
        """Marginal cost of one local-activity step, from the two local chain lengths run."""
        locals_ = self.local_chains()
        if len(locals_) < 2:
            return None
        a, b = locals_[0], locals_[-1]
        n = b.steps - a.steps
        ops = {
            k: (b.requests[k] - a.requests[k]) / n
            for k in sorted(set(a.requests) | set(b.requests))
            if b.requests[k] != a.requests[k]
        }
        return (
            (a.steps, b.steps),
            ops,
            (b.transitions - a.transitions) / n,
            (b.row().total - a.row().total) / n,
        )

    def local_chains(self) -> list[Costs]:
        return sorted(
            (c for c in [self.local10, *self.more] if c.name.endswith("local")),
            key=lambda c: c.steps,
        )

    def verdicts(self) -> list[str]:
        lines = []
        step = self.local_step()
        if step is None:
            lines.append("* local step = one DynamoDB transaction, no transition: not measured")
        else:
            (low, high), ops, transitions, dollars = step
            dynamo = {k: v for k, v in ops.items() if k.startswith("dynamodb:")}
            # Writes are what the target counts; a read of the inbox (1 RRU) may come with it.
            writes = {k: v for k, v in dynamo.items() if k not in _READS}
            ok = transitions == 0 and writes == {"dynamodb:TransactWriteItems": 1.0}
            detail = ", ".join(f"{k.split(':')[1]} {v:g}" for k, v in dynamo.items())
            lines.append(
                f"* **{'PASS' if ok else 'FAIL'}** local-activity step costs one DynamoDB "
                f"transaction and no transition: per step (the {low}- and {high}-step local "
                f"chains' difference) {sum(dynamo.values()):g} DynamoDB requests ({detail}), "
                f"{transitions:g} transitions, ${dollars * 1e6:,.2f} per million steps"
            )
        hand = self.chain10_hand
        for durable, what in (
            (self.chain10, "10-step activity chain (activity Lambda, waited for)"),
            (self.local10, "10-step local-activity chain"),
        ):
            ok = durable.row().total < hand.row().total
            lines.append(
                f"* **{'PASS' if ok else 'FAIL'}** {what} costs less than a hand-written "
                f"Standard state machine: ${durable.row().total * 1e3:.4f} vs "
                f"${hand.row().total * 1e3:.4f} per 1,000 runs = "
                f"{durable.row().total / hand.row().total:.2f}x "
                f"({durable.transitions} vs {hand.transitions} transitions)"
            )
        ratio = self.remind.row().total / self.remind_hand.row().total
        lines.append(
            f"* **{'PASS' if ratio <= 2 else 'FAIL'}** remind-user flow within 2x of the "
            f"hand-written one: ${self.remind.row().total * 1e3:.4f} vs "
            f"${self.remind_hand.row().total * 1e3:.4f} per 1,000 runs = {ratio:.2f}x "
            f"({self.remind.transitions} vs {self.remind_hand.transitions} transitions)"
        )
        return lines

    def notes(self) -> list[str]:
        """Readings computed from the same figures (nothing here is typed in by hand)."""
        lines = []
        for costs in (self.remind, self.chain10, self.local10, *self.more):
            d = costs.row().dollars()
            shares = sorted(
                ((k, v / d["total"]) for k, v in d.items() if k != "total" and v > 0),
                key=lambda kv: -kv[1],
            )
            lines.append(
                f"* durable {costs.name}: "
                + ", ".join(f"{k} {share:.0%}" for k, share in shares)
                + " of the cost."
            )
        for costs in (self.remind, self.chain10, *self.more):
            orchestrator = costs.per_function().get("orchestrator")
            if orchestrator is None or not orchestrator.waiting_ms:
                continue
            waiting = orchestrator.waiting_ms / 1000 * orchestrator.memory_mb / 1024
            lines.append(
                f"* durable {costs.name}: the orchestrator waits {orchestrator.waiting_ms:,.0f} "
                f"ms on synchronous activity invocations ({waiting:.3g} GB-s, "
                f"${waiting * PRICES['lambda_gb_second'] * 1e3:.4f} per 1,000 runs, "
                f"{waiting * PRICES['lambda_gb_second'] / costs.row().total:.1%} of the total); "
                f"a Step Functions task would wait for free."
            )
        for costs in (self.remind, self.chain10, self.local10, *self.more):
            parks = costs.answers.count("park")
            if not parks:
                continue
            activity = costs.lambda_invocations["activity"]
            lines.append(
                f"* durable {costs.name}: the loop parked {parks} times, woken "
                f"{parks - costs.timed_out} times by a post, and {costs.answers.count('mail')} "
                "times a post came in while it parked (the same invocation went on): "
                f"{costs.lambda_invocations['orchestrator']} orchestrator invocations and "
                f"{costs.transitions} transitions for {activity} activity invocations. "
                "Started asynchronously, every outcome posted wakes the loop; how many "
                "arrive together depends on timing, so these counts change from run to run."
            )
        sfn = PRICES["sfn_transition"]
        for durable, hand, factor, target in (
            (self.remind, self.remind_hand, 2.0, "within 2x of"),
            (self.chain10, self.chain10_hand, 1.0, "cheaper than"),
        ):
            rest = durable.row().total - durable.row().dollars()["Step Functions"]
            budget = math.ceil((factor * hand.row().total - rest) / sfn) - 1
            lines.append(
                f"* For durable {durable.name} to be {target} the hand-written one, with its "
                f"Lambda and DynamoDB costs as counted, it could spend at most {budget} "
                f"transitions per run (it spends {durable.transitions}; the hand-written "
                f"machine {hand.transitions})."
            )
        lines.append(
            "* Read units per additional local step: "
            + ", ".join(
                f"{(b.rru - a.rru) / (b.steps - a.steps):.1f} over steps {a.steps + 1}-{b.steps}"
                for a, b in itertools.pairwise(self.local_chains())
            )
            + " (the Query of the inbox each step makes; a warm orchestrator resumes the "
            "workflow instead of reading its history)."
        )
        chains = sorted(
            (c for c in [self.chain10, *self.more] if c.name.endswith("chain, dispatched")),
            key=lambda c: c.steps,
        )
        lines.append(
            "* Read units per activity invocation in the dispatched chains: "
            + ", ".join(
                f"{c.per_function()['activity'].rru / c.lambda_invocations['activity']:.1f} "
                f"over {c.steps} steps"
                for c in chains
            )
            + " (each reads its run's whole history to find its attempt, so a step's reads "
            "grow with the history)."
        )
        for costs, waits in ((self.remind, 2), (self.chain10, 0)):
            ratio = costs.row().total / self.ldf(costs, waits).total
            lines.append(
                f"* durable {costs.name} costs {ratio:.1f}x the Lambda durable functions estimate."
            )
        return lines

    def render(self) -> str:
        memory = self.remind.memory_mb
        out = [
            "# What a workflow costs on AWS",
            "",
            "Generated by `python -m tests.aws_costs --write infra/COSTS.md` (moto, "
            f"{self.seconds:.0f} s); every count below comes from the emulated runs, "
            "see the docstring of tests/aws_costs.py for how each is counted or estimated.",
            "",
            "Assumptions:",
            "",
            "* us-east-1 list prices: Lambda $0.20 per million requests + $0.0000166667 per "
            "GB-s (x86); Step Functions Standard $0.025 per 1,000 transitions; DynamoDB "
            "on-demand $0.625 per million write units, $0.125 per million read units; S3 "
            "$0.005 per 1,000 PUTs, $0.0004 per 1,000 GETs. Free tiers ignored.",
            "* Lambda memory from infra/template.yaml (defaults): "
            + ", ".join(f"{k} {v} MB" for k, v in sorted(memory.items()))
            + f"; the hand-written machines' functions get the activity's {memory['activity']} MB.",
            f"* Lambda duration: {BASE_MS:g} ms per invocation + {REQUEST_MS:g} ms per AWS "
            "request it made (counted) + the whole billed duration of every invocation it "
            "waited for (a synchronous invoke: the orchestrator waiting on the activity Lambda "
            "pays for the activity's time again; a round invoked at once costs its longest "
            "invocation); business logic free on every side. The in-process time under moto "
            "is not representative (shown below for reference only).",
            "* DynamoDB units estimated from item sizes: 1 write unit per KB, 2x in a "
            "transaction; 1 read unit per 4 KB strongly consistent (the store reads "
            "consistently), 0.5 eventually; Query by the total size returned.",
            "* Step Functions: every state entered is a billed transition (counted from the "
            "executions' histories).",
            "* Lambda durable functions (not emulated): $8.00 per million durable "
            "operations, $0.25 per GB written, $0.15 per GB-month retained; source: "
            f"{LDF_SOURCE}. Mapping: 1 operation to start, 1 per step, 1 per wait; one "
            "invocation to start and one per wait; 1 KB written per operation, kept 14 days.",
            "* A step: one activity call or one timer (remind_user has 4: 2 sleeps, 2 emails). "
            "durable's rows include the API Lambda that starts the instance; the hand-written "
            "machines are started with StartExecution directly (free).",
            "",
            "## Per workflow run",
            "",
            *_table(self.rows(), dollars_scale=1000, dollars_label="$ per 1,000 runs"),
            "",
            "## Per 1,000,000 steps",
            "",
            *_table(
                [r.scaled(1e6 / r.steps) for r in self.rows()],
                dollars_scale=1,
                dollars_label="$ per million steps",
            ),
            "",
            "## Lambda time per function",
            "",
            "Billed milliseconds per run by the model: the base per invocation, the "
            "function's own AWS requests, and the time it waits on synchronous invocations "
            "of another function (counted again there).",
            "",
            *_functions_table([c for c in self.all() if c.system == "durable"]),
            "",
            "## Where the transitions go: remind_user",
            "",
            *_states_table(
                "durable (infra/statemachine.asl.json)",
                self.remind.states,
                loop_states(self.remind.answers, timed_out=self.remind.timed_out),
                self.remind.answers,
            ),
            "",
            *_states_table(
                "hand-written (tests/handwritten/remind_user.asl.json)",
                self.remind_hand.states,
                handwritten_states("remind_user.asl.json"),
            ),
            "",
            "## Where the transitions go: 10-step chain",
            "",
            *_states_table(
                "durable, activities in the activity Lambda",
                self.chain10.states,
                loop_states(self.chain10.answers, timed_out=self.chain10.timed_out),
                self.chain10.answers,
            ),
            "",
            *_states_table(
                "durable, local activities",
                self.local10.states,
                loop_states(self.local10.answers, timed_out=self.local10.timed_out),
                self.local10.answers,
            ),
            "",
            *_states_table(
                "hand-written (tests/handwritten/chain10.asl.json)",
                self.chain10_hand.states,
                handwritten_states("chain10.asl.json"),
            ),
            "",
            "## Where the transitions go: the other workloads",
            "",
            *(
                line
                for costs in self.more
                for line in (
                    *_states_table(
                        f"durable {costs.name}",
                        costs.states,
                        loop_states(costs.answers, timed_out=costs.timed_out),
                        costs.answers,
                    ),
                    "",
                )
            ),
            "## Counted requests",
            "",
            "| system | workload | Lambda invocations | AWS requests | unattributed "
            "| in-process GB-s (moto) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {c.system} | {c.name} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(c.lambda_invocations.items()))
                + " | "
                + (", ".join(f"{k} {v}" for k, v in sorted(c.requests.items())) or "none")
                + f" | {sum(c.unattributed.values())} | {c.measured_gb_seconds:.3f} |"
                for c in self.all()
            ),
            "",
            "## Notes",
            "",
            *self.notes(),
            "",
            "## Targets",
            "",
            *self.verdicts(),
            "",
        ]
        return "\n".join(out)

    def all(self) -> list[Costs]:
        return [
            self.remind,
            self.remind_hand,
            self.chain10,
            self.local10,
            self.chain10_hand,
            *self.more,
        ]


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def _table(rows: list[Row], *, dollars_scale: float, dollars_label: str) -> list[str]:
    head = (
        "| system | workload | steps | Lambda requests | GB-s | transitions | DynamoDB requests "
        "| WRU | RRU | S3 PUT/GET | durable ops | "
        f"{dollars_label}: Lambda | SFN | DynamoDB | S3 | durable ops | **total** |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        d = {k: v * dollars_scale for k, v in r.dollars().items()}
        lines.append(
            f"| {r.system} | {r.workload} | {r.steps} | {_num(r.lambda_requests)} "
            f"| {_num(r.gb_seconds)} | {_num(r.transitions)} | {_num(r.dynamodb_requests)} "
            f"| {_num(r.wru)} | {_num(r.rru)} | {_num(r.s3_puts)}/{_num(r.s3_gets)} "
            f"| {_num(r.durable_operations)} | {d['Lambda']:.4f} | {d['Step Functions']:.4f} "
            f"| {d['DynamoDB']:.4f} | {d['S3']:.4f} | {d['durable ops']:.4f} "
            f"| **{d['total']:.4f}** |"
        )
    return lines


def _functions_table(runs: list[Costs]) -> list[str]:
    lines = [
        "| workload | function | invocations | MB | base ms | request ms | waiting ms "
        "| billed ms | GB-s | $ per 1,000 runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for costs in runs:
        counts = costs.lambda_invocations
        for kind, total in sorted(costs.per_function().items()):
            gb_s = costs.function_gb_seconds(kind)
            base = BASE_MS * counts[kind]
            dollars = counts[kind] * PRICES["lambda_request"] + gb_s * PRICES["lambda_gb_second"]
            lines.append(
                f"| {costs.name} | {kind} | {counts[kind]} | {total.memory_mb} | {base:,.0f} "
                f"| {total.request_ms:,.0f} | {total.waiting_ms:,.0f} "
                f"| {base + total.request_ms + total.waiting_ms:,.0f} | {_num(gb_s)} "
                f"| {dollars * 1e3:.4f} |"
            )
    return lines


def _states_table(
    title: str, counted: Counter[str], implied: Counter[str], answers: Sequence[str] = ()
) -> list[str]:
    source = "the orchestrator's answers" if answers else "the ASL"
    lines = [f"{title}:", ""]
    if answers:
        lines += [
            "orchestrator answers: " + ", ".join(f"{k} {v}" for k, v in Counter(answers).items()),
            "",
        ]
    lines += [
        f"| state | entered | implied by {source} | $ per 1,000 runs |",
        "|---|---|---|---|",
    ]
    for state in [*implied, *(s for s in counted if s not in implied)]:
        dollars = counted[state] * PRICES["sfn_transition"] * 1e3
        lines.append(f"| {state} | {counted[state]} | {implied[state]} | {dollars:.4f} |")
    total = sum(counted.values())
    lines.append(
        f"| **total** | **{total}** | **{sum(implied.values())}** "
        f"| **{total * PRICES['sfn_transition'] * 1e3:.4f}** |"
    )
    return lines


def run(*, quick: bool = False) -> Results:
    started = time.monotonic()
    results = Results(
        remind=remind_user(),
        remind_hand=remind_user_handwritten(),
        chain10=dispatched_chain(10),
        local10=local_chain(10),
        chain10_hand=chain10_handwritten(),
        more=[local_chain(1), fan_out(5)]
        + (
            []
            if quick
            else [
                local_chain(100),
                dispatched_chain(100),
                fan_out(100),
                dispatched_chain(10, inline_seconds=0),
            ]
        ),
    )
    results.seconds = time.monotonic() - started
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.aws_costs", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="skip the 100-step workloads and InlineSeconds=0"
    )
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # the handlers' own logs; metrics go to the captured stdout
    with contextlib.redirect_stdout(io.StringIO()):
        results = run(quick=args.quick)
    report = results.render()
    print(report)
    if args.write:
        args.write.write_text(report)


if __name__ == "__main__":
    main()
