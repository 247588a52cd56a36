"""What one run costs on AWS, counted from the emulated run (``python -m tests.aws_costs``).

Counted exactly: Lambda invocations, Step Functions state transitions (every
``*StateEntered`` event, Map iterations included), DynamoDB and S3 requests.
Estimated: DynamoDB capacity units, from the size of the items in each request
or response in DynamoDB's wire format (a slight overestimate of DynamoDB's own
item size); an ``UpdateItem`` or ``DeleteItem`` counts one write unit (headers
are under 1 KB); reads are eventually consistent (half a unit per 4 KB) unless
``ConsistentRead`` is set; each transactional item counts double. Lambda
GB-seconds use the in-process handler time with each function's memory, an
underestimate of a real cold start.

Prices (us-east-1 list prices, x86, on-demand, as of 2025):
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3

from tests.aws_harness import AwsHarness

PRICES = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "sfn_transition": 0.025 / 1e3,
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "s3_put": 0.005 / 1e3,
    "s3_get": 0.0004 / 1e3,
}
__doc__ = (__doc__ or "") + "".join(f"\n    {k}: ${v:.10f}" for k, v in PRICES.items()) + "\n"

_WRITE_ONE = {"UpdateItem", "DeleteItem"}


def _size(item: dict[str, Any]) -> int:
    return len(json.dumps(item, separators=(",", ":")).encode())


@dataclass
class Meter:
    """Counts DynamoDB and S3 requests made through boto3's default session."""

    requests: Counter[str] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    on: bool = True

    def install(self) -> None:
        session = boto3._get_default_session()
        session.events.register("before-parameter-build.dynamodb", self._before)
        session.events.register("after-call.dynamodb", self._after)
        session.events.register("before-parameter-build.s3", self._s3)

    def _s3(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if self.on:
            self.requests[f"s3:{model.name}"] += 1

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if not self.on:
            return
        op = model.name
        self.requests[f"dynamodb:{op}"] += 1
        if op == "PutItem":
            self.wru += math.ceil(_size(params["Item"]) / 1024)
        elif op in _WRITE_ONE:
            self.wru += 1
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                kind, body = next(iter(entry.items()))
                units = math.ceil(_size(body["Item"]) / 1024) if kind == "Put" else 1
                self.wru += 2 * units
        elif op == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    put = request.get("PutRequest")
                    self.wru += math.ceil(_size(put["Item"]) / 1024) if put else 1

    def _after(self, model: Any, parsed: dict[str, Any], **kwargs: Any) -> None:
        if not self.on:
            return
        op = model.name
        factor = 0.5  # the store reads eventually consistent unless it says otherwise
        if op == "GetItem" and "Item" in parsed:
            self.rru += factor * max(1, math.ceil(_size(parsed["Item"]) / 4096))
        elif op == "GetItem":
            self.rru += factor
        elif op == "Query":
            total = sum(_size(item) for item in parsed.get("Items", []))
            self.rru += factor * max(1, math.ceil(total / 4096))
        elif op == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                self.rru += sum(factor * max(1, math.ceil(_size(i) / 4096)) for i in items)


@dataclass
class Costs:
    name: str
    lambda_invocations: Counter[str]
    gb_seconds: float
    transitions: int
    requests: Counter[str]
    wru: float
    rru: float

    def dollars_per_1000_runs(self) -> dict[str, float]:
        s3_puts = sum(n for k, n in self.requests.items() if k in ("s3:PutObject",))
        s3_gets = sum(n for k, n in self.requests.items() if k in ("s3:GetObject",))
        per_run = {
            "lambda": sum(self.lambda_invocations.values()) * PRICES["lambda_request"]
            + self.gb_seconds * PRICES["lambda_gb_second"],
            "step_functions": self.transitions * PRICES["sfn_transition"],
            "dynamodb": self.wru * PRICES["dynamodb_wru"] + self.rru * PRICES["dynamodb_rru"],
            "s3": s3_puts * PRICES["s3_put"] + s3_gets * PRICES["s3_get"],
        }
        per_run["total"] = sum(per_run.values())
        return {k: v * 1000 for k, v in per_run.items()}

    def render(self) -> str:
        dollars = self.dollars_per_1000_runs()
        lines = [
            f"== {self.name}",
            f"  Lambda invocations: {dict(self.lambda_invocations)} "
            f"(total {sum(self.lambda_invocations.values())}, {self.gb_seconds:.3f} GB-s in-process)",
            f"  Step Functions state transitions: {self.transitions}",
            f"  DynamoDB requests: "
            f"{ {k: v for k, v in self.requests.items() if k.startswith('dynamodb')} }",
            f"  DynamoDB units (estimated): {self.wru:g} WRU, {self.rru:g} RRU",
            f"  S3 requests: { {k: v for k, v in self.requests.items() if k.startswith('s3')} }",
            "  $ per 1,000 runs: " + ", ".join(f"{k} {v:.4f}" for k, v in dollars.items()),
        ]
        return "\n".join(lines)


def measure(name: str, workflow: str, input: Any) -> Costs:
    """Run one instance through the emulated stack and count what it used."""
    with AwsHarness() as h:
        meter = Meter()
        meter.install()
        h.start(workflow, input)
        executions = h.wait_for_executions(300)
        meter.on = False
        sfn = boto3.client("stepfunctions")
        transitions = 0
        for execution in executions:
            pages = sfn.get_paginator("get_execution_history").paginate(
                executionArn=execution["executionArn"]
            )
            transitions += sum(
                1 for page in pages for e in page["events"] if e["type"].endswith("StateEntered")
            )
        invocations = [i for i in h.invocations if not i.function.endswith("-api")]
        return Costs(
            name=name,
            lambda_invocations=Counter(
                h._kind(i.function) for i in h.invocations if i.payload.get("httpMethod") != "GET"
            ),
            gb_seconds=sum(i.seconds * i.memory_mb / 1024 for i in invocations),
            transitions=transitions,
            requests=meter.requests,
            wru=meter.wru,
            rru=meter.rru,
        )


SCENARIOS = [
    ("examples/remind_user.py", "remind_user", {"name": "Ada", "email": "ada@example.com"}),
    ("100 sequential local activities", "aws_flows.local_chain", 100),
    ("100 sequential dispatched activities", "aws_flows.remote_chain", 100),
]


def main() -> None:
    print(__doc__)
    for name, workflow, value in SCENARIOS:
        print(measure(name, workflow, value).render())


if __name__ == "__main__":
    main()
