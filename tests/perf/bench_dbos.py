"""The same workloads on DBOS (W1, W2, W4, W6), with its SQLite system database.

DBOS's SQLite system database uses SQLite's defaults: a rollback journal and
``synchronous=FULL``, so each step's checkpoint is fsynced, as ours is (we use
WAL). Workflows are DBOS's plain synchronous ones: each runs in a thread of
DBOS's (unbounded) executor; a sleeping one keeps its thread.

    python -m tests.perf.bench_dbos [--quick] [--only W1,W2] [--json FILE]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tests.perf.common import (
    Report,
    Sizes,
    main,
    median_of,
    scratch_dir,
    sleepers,
)

try:
    from dbos import DBOS
except ImportError as exc:  # reported by main() as "not run"
    DBOS = None
    _IMPORT_ERROR: str | None = f"dbos is not installed ({exc})"
else:
    _IMPORT_ERROR = None

_fns: dict[str, Any] = {}
_queues: dict[str, Any] = {}
_asleep = threading.Semaphore(0)


@contextmanager
def _dbos(name: str) -> Iterator[Any]:
    """A launched DBOS with its system database in a fresh SQLite file."""
    if DBOS is None:
        raise RuntimeError(_IMPORT_ERROR)
    with scratch_dir(f"dbos-{name}") as folder:
        DBOS(config={"name": f"perf-{name}", "system_database_url": f"sqlite:///{folder}/dbos.db"})
        DBOS.launch()
        try:
            _queues["fan_out"] = DBOS.register_queue("perf_fan_out")
            yield DBOS
        finally:
            DBOS.destroy()


if DBOS is not None:

    @DBOS.step()
    def inc(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def sequence(n: int) -> int:
        total = 0
        for i in range(n):
            total = inc(i)
        return total

    @DBOS.workflow()
    def fan_out(n: int) -> int:
        handles = [_queues["fan_out"].enqueue(inc, i) for i in range(n)]
        return sum(h.get_result() for h in handles)

    @DBOS.workflow()
    def sleeper(delay: float) -> float:
        start = time.time()
        _asleep.release()
        DBOS.sleep(delay)
        return time.time() - start - delay

    _fns.update(inc=inc, sequence=sequence, fan_out=fan_out, sleeper=sleeper)


def w1(report: Report, sizes: Sizes) -> None:
    n = sizes.w1_steps
    with _dbos("w1"):

        def once() -> float:
            started = time.perf_counter()
            assert _fns["sequence"](n) == n
            return time.perf_counter() - started

        seconds = median_of(sizes.small_runs, once)
    report.add("W1", "steps/s", n / seconds, "steps/s")
    report.add("W1", "ms/step", seconds / n * 1000, "ms", "lower")


def w2(report: Report, sizes: Sizes) -> None:
    count, n = sizes.w2_workflows, sizes.w2_steps
    with _dbos("w2") as dbos:

        def once() -> float:
            started = time.perf_counter()
            handles = [dbos.start_workflow(_fns["sequence"], n) for _ in range(count)]
            for handle in handles:
                assert handle.get_result() == n
            return time.perf_counter() - started

        seconds = median_of(sizes.large_runs, once)
    report.add("W2", "steps/s", count * n / seconds, "steps/s")
    report.add("W2", "workflows/s", count / seconds, "wf/s")


def w4(report: Report, sizes: Sizes) -> None:
    n = sizes.w4_fanout
    with _dbos("w4"):

        def once(width: int = n) -> float:
            started = time.perf_counter()
            assert _fns["fan_out"](width) == width * (width + 1) // 2
            return time.perf_counter() - started

        once(max(10, n // 10))  # warm-up
        seconds = median_of(sizes.large_runs, once, warmup=False)
    report.add("W4", "wall time", seconds, "s", "lower", "Queue.enqueue of each step")


def w6(report: Report, sizes: Sizes) -> None:
    with _dbos("w6") as dbos:
        sleepers(
            report,
            sizes,
            start=lambda delay: dbos.start_workflow(_fns["sleeper"], delay),
            asleep=_asleep,
            result=lambda handle: float(handle.get_result()),
        )


WORKLOADS = {"W1": w1, "W2": w2, "W4": w4, "W6": w6}


def run(argv: Sequence[str] | None = None) -> int:
    return main("DBOS", WORKLOADS, argv)


if __name__ == "__main__":
    raise SystemExit(run())
