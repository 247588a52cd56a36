"""What durable costs on AWS, next to hand-written Step Functions and Lambda durable functions.

``python -m tests.aws_costs`` (``--quick``: without the 100-step chains; ``--write
infra/COSTS.md``: store the report too) runs each workload end to end in moto
(tests/aws_harness.py: the stack from infra/template.yaml, moto's Step Functions
executing the state machine, our handlers behind its Lambda), and the hand-written
state machines of tests/handwritten/ the same way, then prints markdown tables.

Counted exactly, from the run: Lambda invocations per function, Step Functions
state transitions (every ``*StateEntered`` event of the execution history, Map
iterations included, per state name), DynamoDB and S3 requests (and the Step
Functions API calls the handlers make, which are free).

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
  (counted), times the function's memory size from the deployed template. Business
  logic is taken as free on both sides (the same code runs in either). The measured
  in-process time is printed for reference.
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
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Meter:
    """Counts the AWS requests made through boto3's default session while it is installed.

    A request is charged to the Lambda invocation running on the thread that made it
    (``invocations`` is the harness's list); DynamoDB and S3 requests made outside any
    invocation are counted too, Step Functions API calls only inside one.
    """

    invocations: list[Invocation] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    per_invocation: Counter[int] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    on: bool = False
    _handlers: list[tuple[str, Any]] = field(default_factory=list)

    def install(self) -> None:
        events = boto3._get_default_session().events
        self._handlers = [
            ("before-parameter-build.dynamodb", self._before_dynamodb),
            ("after-call.dynamodb", self._after_dynamodb),
            ("before-parameter-build.s3", self._count),
            ("before-parameter-build.sfn", self._count),
        ]
        for name, handler in self._handlers:
            events.register(name, handler)
        self.on = True

    def uninstall(self) -> None:
        # Clients made meanwhile hold copies of the session's handlers: switch them off too.
        self.on = False
        events = boto3._get_default_session().events
        for name, handler in self._handlers:
            events.unregister(name, handler)
        self._handlers = []

    def _current(self) -> Invocation | None:
        me = threading.get_ident()
        for record in reversed(self.invocations):
            if record.thread == me and not record.done:
                return record
        return None

    def _count(self, model: Any, **_: Any) -> None:
        if not self.on:
            return
        service = model.service_model.endpoint_prefix
        current = self._current()
        if current is None and service == "states":
            return
        if current is not None:
            self.per_invocation[id(current)] += 1
        self.requests[f"{'stepfunctions' if service == 'states' else service}:{model.name}"] += 1

    def _before_dynamodb(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        if not self.on:
            return
        self._count(model)
        op = model.name
        consistent = bool(params.get("ConsistentRead")) or any(
            bool(table.get("ConsistentRead")) for table in params.get("RequestItems", {}).values()
        )
        context["cost_model_consistent"] = consistent
        if op == "PutItem":
            self.wru += _kb(params["Item"])
        elif op in _WRITE_ONE:
            self.wru += 1
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                kind, body = next(iter(entry.items()))
                self.wru += 2 * (_kb(body["Item"]) if kind == "Put" else 1)
        elif op == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    put = request.get("PutRequest")
                    self.wru += _kb(put["Item"]) if put else 1

    def _after_dynamodb(
        self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        if not self.on:
            return
        op = model.name
        factor = 1.0 if context.get("cost_model_consistent") else 0.5

        def units(size: int) -> float:
            return factor * max(1, math.ceil(size / 4096))

        if op == "GetItem":
            self.rru += units(_size(parsed["Item"]) if "Item" in parsed else 0)
        elif op in ("Query", "Scan"):
            self.rru += units(sum(_size(item) for item in parsed.get("Items", [])))
        elif op == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                self.rru += sum(units(_size(i)) for i in items)
        elif op == "TransactGetItems":
            for response in parsed.get("Responses", []):
                self.rru += 2 * max(1, math.ceil(_size(response.get("Item", {})) / 4096))


@dataclass
class Billed:
    """One Lambda invocation as the model bills it."""

    kind: str
    memory_mb: int
    aws_requests: int
    measured_seconds: float

    @property
    def seconds(self) -> float:
        return (BASE_MS + REQUEST_MS * self.aws_requests) / 1000

    @property
    def gb_seconds(self) -> float:
        return self.seconds * self.memory_mb / 1024


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


def _entered_states(executions: Iterable[str]) -> Counter[str]:
    sfn = boto3.client("stepfunctions")
    states: Counter[str] = Counter()
    for arn in executions:
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
            for event in page["events"]:
                if event["type"].endswith("StateEntered"):
                    states[event["stateEnteredEventDetails"]["name"]] += 1
    return states


def _billed(h: AwsHarness, meter: Meter) -> list[Billed]:
    return [
        Billed(h._kind(i.function), i.memory_mb, meter.per_invocation[id(i)], i.seconds)
        for i in h.invocations
        if not (isinstance(i.payload, dict) and i.payload.get("httpMethod") == "GET")
    ]


def _memory(h: AwsHarness) -> dict[str, int]:
    client = boto3.client("lambda")
    return {
        kind: int(client.get_function_configuration(FunctionName=name)["MemorySize"])
        for kind, name in h.functions.items()
    }


def measure(name: str, workflow: str, input: Any, *, steps: int = 0) -> Costs:
    """Run one durable instance through the emulated stack and count what it used."""
    with AwsHarness() as h:
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
        return Costs(
            name=name,
            system="durable",
            steps=steps,
            invocations=_billed(h, meter),
            states=_entered_states(e["executionArn"] for e in executions),
            requests=meter.requests,
            wru=meter.wru,
            rru=meter.rru,
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
        return Costs(
            name=name,
            system="hand-written",
            steps=steps,
            invocations=_billed(h, meter),
            states=_entered_states([execution]),
            requests=meter.requests,
            wru=meter.wru,
            rru=meter.rru,
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


# ----------------------------------------------------------------------------- what the ASL implies


def iteration_states(
    asl: dict[str, Any], decision: str | None = None, items: int = 0
) -> Counter[str]:
    """The states one pass through ``asl`` enters, Map iterations included.

    For the durable loop a pass is one orchestrator decision: from ``StartAt``
    (Orchestrate) through the Choice branch for ``decision`` until the path returns to
    ``StartAt`` or ends; a Map runs ``items`` iterations of its item processor. For a
    hand-written machine without Choice states it is the whole run. Catch and Retry
    paths (failures) are not taken.
    """
    states = asl["States"]
    entered: Counter[str] = Counter()
    name = asl["StartAt"]
    while True:
        entered[name] += 1
        state = states[name]
        if state["Type"] == "Map":
            for _ in range(items):
                entered += iteration_states(state["ItemProcessor"])
        if state["Type"] == "Choice":
            chosen = [c["Next"] for c in state["Choices"] if c.get("StringEquals") == decision]
            following = chosen[0] if chosen else state.get("Default")
        else:
            following = state.get("Next")
        if following is None or following == asl["StartAt"] or state.get("End"):
            return entered
        name = following


def loop_states(decisions: Sequence[tuple[str, int]]) -> Counter[str]:
    """States the durable loop enters for a sequence of (decision, activities) passes."""
    asl = json.loads(ASL.read_text())
    total: Counter[str] = Counter()
    for decision, items in decisions:
        total += iteration_states(asl, decision, items)
    return total


def handwritten_states(asl_file: str) -> Counter[str]:
    return iteration_states(json.loads((HANDWRITTEN / asl_file).read_text()))


# ----------------------------------------------------------------------------- workloads

ADA = {"name": "Ada", "email": "ada@example.com"}
REMIND_DECISIONS = [("sleep", 0), ("run", 1), ("sleep", 0), ("run", 1), ("succeed", 0)]
"""examples/remind_user.py on the loop: sleep 2 h, email, sleep 1 day, email, done."""


def chain_decisions(n: int) -> list[tuple[str, int]]:
    """remote_chain(n) on the loop: one activity per pass, then done."""
    return [("run", 1)] * n + [("succeed", 0)]


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


def dispatched_chain(n: int) -> Costs:
    return measure(f"{n}-step chain, dispatched", "aws_flows.remote_chain", n, steps=n)


def local_chain(n: int) -> Costs:
    return measure(f"{n}-step chain, local", "aws_flows.local_chain", n, steps=n)


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
            if "dispatched" in costs.name:
                rows.append(self.ldf(costs, waits=0))
        return rows

    def local_step(self) -> tuple[tuple[int, int], dict[str, float], float, float] | None:
        """Marginal cost of one local-activity step, from the two local chain lengths run."""
        locals_ = sorted(
            (c for c in [self.local10, *self.more] if c.name.endswith("local")),
            key=lambda c: c.steps,
        )
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
        for durable in (self.chain10, self.local10):
            ok = durable.row().total < self.chain10_hand.row().total
            lines.append(
                f"* **{'PASS' if ok else 'FAIL'}** {durable.name} costs less than the "
                f"hand-written 10-step chain: ${durable.row().total * 1e3:.4f} vs "
                f"${self.chain10_hand.row().total * 1e3:.4f} per 1,000 runs "
                f"({durable.transitions} vs {self.chain10_hand.transitions} transitions)"
            )
        ratio = self.remind.row().total / self.remind_hand.row().total
        lines.append(
            f"* **{'PASS' if ratio <= 2 else 'FAIL'}** remind_user within 2x of the hand-written "
            f"one: ${self.remind.row().total * 1e3:.4f} vs "
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
        local = sorted(
            (c for c in [self.local10, *self.more] if c.name.endswith("local")),
            key=lambda c: c.steps,
        )
        lines.append(
            "* Read units per additional local step: "
            + ", ".join(
                f"{(b.rru - a.rru) / (b.steps - a.steps):.1f} over steps {a.steps + 1}-{b.steps}"
                for a, b in itertools.pairwise(local)
            )
            + " (each orchestration step reads the history it has so far)."
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
            "request it made (counted); business logic free on every side. The in-process "
            "time under moto is not representative (shown below for reference only).",
            "* DynamoDB units estimated from item sizes: 1 write unit per KB, 2x in a "
            "transaction; 1 read unit per 4 KB strongly consistent (the store reads "
            "consistently), 0.5 eventually; Query by the total size returned.",
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
            "## Where the transitions go: remind_user",
            "",
            *_states_table(
                "durable (infra/statemachine.asl.json)",
                self.remind.states,
                loop_states(REMIND_DECISIONS),
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
                "durable, dispatched activities",
                self.chain10.states,
                loop_states(chain_decisions(10)),
            ),
            "",
            *_states_table(
                "durable, local activities",
                self.local10.states,
                loop_states([("succeed", 0)]),
            ),
            "",
            *_states_table(
                "hand-written (tests/handwritten/chain10.asl.json)",
                self.chain10_hand.states,
                handwritten_states("chain10.asl.json"),
            ),
            "",
            "## Counted requests",
            "",
            "| system | workload | Lambda invocations | AWS requests | in-process GB-s (moto) |",
            "|---|---|---|---|---|",
            *(
                f"| {c.system} | {c.name} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(c.lambda_invocations.items()))
                + " | "
                + (", ".join(f"{k} {v}" for k, v in sorted(c.requests.items())) or "none")
                + f" | {c.measured_gb_seconds:.3f} |"
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


def _states_table(title: str, counted: Counter[str], implied: Counter[str]) -> list[str]:
    lines = [f"{title}:", "", "| state | entered | implied by the ASL |", "|---|---|---|"]
    for state in [*implied, *(s for s in counted if s not in implied)]:  # ASL order
        lines.append(f"| {state} | {counted[state]} | {implied[state]} |")
    lines.append(f"| **total** | **{sum(counted.values())}** | **{sum(implied.values())}** |")
    return lines


def run(*, quick: bool = False) -> Results:
    started = time.monotonic()
    results = Results(
        remind=remind_user(),
        remind_hand=remind_user_handwritten(),
        chain10=dispatched_chain(10),
        local10=local_chain(10),
        chain10_hand=chain10_handwritten(),
        more=[local_chain(1)] + ([] if quick else [local_chain(100), dispatched_chain(100)]),
    )
    results.seconds = time.monotonic() - started
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.aws_costs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 100-step chains")
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
