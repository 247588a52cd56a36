"""W1 and W3 on AWS Lambda durable functions' local runner.

``DurableFunctionTestRunner`` from ``aws-durable-execution-sdk-python-testing``
runs a ``@durable_execution`` handler in this process against an emulated
checkpoint service. Its default store keeps executions in memory: nothing is
written to disk, so it does no durable I/O at all. W1 also runs on its optional
SQLite store (WAL, ``synchronous=NORMAL``, the whole execution rewritten per
checkpoint), beside ours with ``synchronous=NORMAL``. Time skipping is its
default (``skip_time``).

    python -m tests.perf.bench_aws [--quick] [--only W1,W3] [--json FILE]
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

from tests.perf.common import (
    Report,
    Sizes,
    main,
    median_dict,
    median_of,
    scratch_dir,
    step_times,
)

try:
    from aws_durable_execution_sdk_python import DurableContext, durable_execution
    from aws_durable_execution_sdk_python.config import Duration
    from aws_durable_execution_sdk_python_testing import DurableFunctionTestRunner
    from aws_durable_execution_sdk_python_testing.stores.sqlite import SQLiteExecutionStore
except ImportError as exc:  # reported by main() as "not run"
    _IMPORT_ERROR: str | None = f"aws-durable-execution-sdk-python-testing is not installed ({exc})"
else:
    _IMPORT_ERROR = None

_marks: dict[int, float] = {}
_names = itertools.count()


def _mark(i: int) -> int:
    _marks.setdefault(i, time.perf_counter())
    return i + 1


def _handlers() -> tuple[Any, Any]:
    if _IMPORT_ERROR is not None:
        raise RuntimeError(_IMPORT_ERROR)

    @durable_execution
    def sequence(event: Any, context: DurableContext) -> int:
        total = 0
        for i in range(event["n"]):
            total = context.step(lambda _, i=i: i + 1, name=f"inc-{i}")
        return total

    @durable_execution
    def timers(event: Any, context: DurableContext) -> int:
        n = event["n"]
        for i in range(n):
            context.step(lambda _, i=i: _mark(i), name=f"mark-{i}")
            if i % 10 == 9:
                context.wait(Duration.from_seconds(1), name=f"sleep-{i}")
        return n

    return sequence, timers


def _run(runner: Any, n: int) -> int:
    result = runner.run(
        input=json.dumps({"n": n}), execution_timeout=3600, execution_name=f"run-{next(_names)}"
    )
    assert str(result.status).endswith("SUCCEEDED"), result.status
    return int(json.loads(result.result) if isinstance(result.result, str) else result.result)


def w1(report: Report, sizes: Sizes) -> None:
    n = sizes.w1_steps
    sequence, _ = _handlers()
    with scratch_dir("aws-w1") as folder:
        # In memory (the runner's default), then on its SQLite store (WAL, synchronous=NORMAL).
        for store in (None, SQLiteExecutionStore.create_and_initialize(folder / "aws.db")):
            with DurableFunctionTestRunner(handler=sequence, store=store) as runner:

                def once(runner: Any = runner) -> float:
                    started = time.perf_counter()
                    assert _run(runner, n) == n
                    return time.perf_counter() - started

                seconds = median_of(sizes.small_runs, once)
            if store is None:
                report.add("W1", "steps/s", n / seconds, "steps/s", note="in memory: no disk I/O")
                report.add("W1", "ms/step", seconds / n * 1000, "ms", "lower")
            else:
                report.add(
                    "W1",
                    "steps/s, synchronous=NORMAL",
                    n / seconds,
                    "steps/s",
                    note=("its SQLiteExecutionStore (WAL, synchronous=NORMAL)"),
                )


def w3(report: Report, sizes: Sizes) -> None:
    n = sizes.w3_steps
    window = min(100, n // 4)
    _, timers = _handlers()
    with DurableFunctionTestRunner(handler=timers, skip_time=True) as runner:

        def once(steps: int = n) -> dict[str, float]:
            _marks.clear()
            started = time.perf_counter()
            assert _run(runner, steps) == steps
            return step_times(_marks, time.perf_counter() - started, steps, window)

        once(max(window + 1, n // 10))  # warm-up
        ms = median_dict(sizes.large_runs, once)
    report.add("W3", "ms/step", ms["all"], "ms", "lower", "in memory: no disk I/O")
    report.add("W3", f"ms/step, first {window} steps", ms["first"], "ms", "lower")
    report.add("W3", f"ms/step, last {window} steps", ms["last"], "ms", "lower")
    report.add("W3", "growth, last/first", ms["last"] / ms["first"], "x", "lower")


WORKLOADS = {"W1": w1, "W3": w3}


def run(argv: Sequence[str] | None = None) -> int:
    return main("AWS durable functions (local runner)", WORKLOADS, argv)


if __name__ == "__main__":
    raise SystemExit(run())
