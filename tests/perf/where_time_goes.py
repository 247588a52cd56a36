"""Where a W1 step's time goes: the store calls of the scheduler thread, timed per call.

    python -m tests.perf.where_time_goes [--steps 1000] [--synchronous FULL]

Runs W1's workflow (``steps`` sequential trivial activities) on a SQLite file
through a store that times every call it passes on: the load, the commit's
writes (until the store calls ``on_ready``: the step's activities start there)
and the rest of the commit (SQLite's COMMIT: the fsync). What is left of a
step's wall time is replaying the workflow, the runtime's bookkeeping and
waiting for the activity's outcome, which runs in a pool thread meanwhile.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durable import Runtime, SQLiteStore
from durable.replay import Decision
from durable.store.base import Snapshot
from tests.perf.bench_durable import sequence


class TimedStore(SQLiteStore):
    """A SQLite store that adds up the time spent in ``load`` and in the parts of ``commit``."""

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(path, synchronous=synchronous)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        started = time.perf_counter()
        try:
            return super().load(instance_id, after=after)
        finally:
            self._add("load", started)

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        started = time.perf_counter()
        ready_at: list[float] = []

        def ready() -> None:
            ready_at.append(time.perf_counter())
            self._add("commit: writes", started)
            if on_ready is not None:
                on_ready()
            self._add("commit: starting the activities", ready_at[0])
            ready_at.append(time.perf_counter())

        try:
            return super().commit(decision, expected_version=expected_version, on_ready=ready)
        finally:
            if ready_at:
                self._add("commit: COMMIT (the fsync)", ready_at[-1])

    def _add(self, what: str, started: float) -> None:
        self.seconds[what] += time.perf_counter() - started
        self.calls[what] += 1


def measure(steps: int, synchronous: str) -> dict[str, float]:
    """Milliseconds per step: wall time, and each timed part."""
    with tempfile.TemporaryDirectory(prefix="durable-perf-") as folder:
        store = TimedStore(Path(folder) / "w1.db", synchronous)
        try:
            with Runtime(store) as runtime:
                runtime.wait(runtime.start(sequence, 10))  # warm-up
                store.seconds.clear()
                started = time.perf_counter()
                assert runtime.wait(runtime.start(sequence, steps)) == steps
                wall = time.perf_counter() - started
        finally:
            store.close()
    per_step: dict[str, Any] = {"wall": wall * 1000 / steps}
    for what, seconds in store.seconds.items():
        per_step[what] = seconds * 1000 / steps
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    options = parser.parse_args()
    figures = measure(options.steps, options.synchronous)
    wall = figures.pop("wall")
    print(f"W1, {options.steps} steps, synchronous={options.synchronous}: {wall:.3f} ms/step")
    for what, ms in figures.items():
        print(f"  {what:<40} {ms:.3f} ms/step")
    rest = wall - sum(figures.values())
    label = "the rest (replay, bookkeeping, waiting)"
    print(f"  {label:<40} {rest:.3f} ms/step")


if __name__ == "__main__":
    main()
