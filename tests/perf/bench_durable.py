"""Benchmarks of ``durable`` itself (W1..W6), on its embedded SQLite store.

Uses only the public API: ``Runtime``, ``@workflow``, ``@activity``,
``durable.testing.replay_history``. The store is a SQLite file in WAL mode with
``synchronous=FULL`` (the default: every commit is fsynced), unless a metric
says otherwise.

    python -m tests.perf.bench_durable [--quick] [--only W1,W3] [--json FILE]
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from durable import Context, Runtime, activity, workflow
from durable.testing import replay_history
from tests.perf.common import (
    Report,
    Sizes,
    main,
    median_dict,
    median_of,
    scratch_dir,
    sleepers,
    step_times,
)


def _store(folder: Path, name: str, synchronous: str = "FULL") -> str:
    return f"sqlite:///{folder / name}.db?synchronous={synchronous}"


# ----------------------------------------------------------------------------- workflows


@activity(name="perf.inc")
def inc(i: int) -> int:
    return i + 1


@workflow(name="perf.sequence")
def sequence(ctx: Context, n: int) -> Any:
    """``n`` trivial activities, one after the other."""
    total = 0
    for i in range(n):
        total = yield ctx.call(inc, i)
    return total


_marks: dict[int, float] = {}


@activity(name="perf.mark")
def mark(i: int) -> int:
    """Notes when step ``i`` first ran (real time)."""
    _marks.setdefault(i, time.perf_counter())
    return i


@workflow(name="perf.timers")
def timers(ctx: Context, n: int) -> Any:
    """``n`` steps with a 1-second timer after every 10th."""
    for i in range(n):
        yield ctx.call(mark, i)
        if i % 10 == 9:
            yield ctx.sleep(timedelta(seconds=1))
    return n


@workflow(name="perf.fan_out")
def fan_out(ctx: Context, n: int) -> Any:
    """``n`` activities at once, then their sum."""
    results = yield ctx.all([ctx.call(inc, i) for i in range(n)])
    return sum(results)


@workflow(name="perf.batches")
def batches(ctx: Context, shape: list[int]) -> Any:
    """``shape[0]`` rounds of ``shape[1]`` activities in parallel: 2 events per activity."""
    rounds, width = shape
    total = 0
    for r in range(rounds):
        results = yield ctx.all([ctx.call(inc, r * width + i) for i in range(width)])
        total += sum(results)
    return total


@workflow(name="perf.sleeper")
def sleeper(ctx: Context, delay: float) -> Any:
    """Sleep ``delay`` seconds; return how late the timer woke the workflow (seconds)."""
    start = ctx.now()
    yield ctx.sleep(timedelta(seconds=delay))
    return (ctx.now() - start).total_seconds() - delay


# ----------------------------------------------------------------------------- workloads


def w1(report: Report, sizes: Sizes) -> None:
    n = sizes.w1_steps
    with scratch_dir("w1") as folder:
        for sync in ("FULL", "NORMAL"):
            with Runtime(_store(folder, f"w1-{sync}", sync)) as rt:

                def once(rt: Runtime = rt) -> float:
                    started = time.perf_counter()
                    assert rt.wait(rt.start(sequence, n)) == n
                    return time.perf_counter() - started

                seconds = median_of(sizes.small_runs, once)
            if sync == "FULL":
                report.add("W1", "steps/s", n / seconds, "steps/s")
                report.add("W1", "ms/step", seconds / n * 1000, "ms", "lower")
            else:
                report.add(
                    "W1", "steps/s, synchronous=NORMAL", n / seconds, "steps/s", note="no fsync"
                )


def w2(report: Report, sizes: Sizes) -> None:
    count, n = sizes.w2_workflows, sizes.w2_steps
    with scratch_dir("w2") as folder, Runtime(_store(folder, "w2")) as rt:

        def once() -> float:
            started = time.perf_counter()
            ids = [rt.start(sequence, n) for _ in range(count)]
            for iid in ids:
                assert rt.wait(iid) == n
            return time.perf_counter() - started

        seconds = median_of(sizes.large_runs, once)
    report.add("W2", "steps/s", count * n / seconds, "steps/s")
    report.add("W2", "workflows/s", count / seconds, "wf/s")


def w3(report: Report, sizes: Sizes) -> None:
    n = sizes.w3_steps
    window = min(100, n // 4)
    with scratch_dir("w3") as folder, Runtime(_store(folder, "w3"), time_skipping=True) as rt:

        def once(steps: int = n) -> dict[str, float]:
            _marks.clear()
            started = time.perf_counter()
            assert rt.wait(rt.start(timers, steps)) == steps
            return step_times(_marks, time.perf_counter() - started, steps, window)

        once(max(window + 1, n // 10))  # warm-up
        ms = median_dict(sizes.large_runs, once)
    report.add("W3", "ms/step", ms["all"], "ms", "lower")
    report.add("W3", f"ms/step, first {window} steps", ms["first"], "ms", "lower")
    report.add("W3", f"ms/step, last {window} steps", ms["last"], "ms", "lower")
    report.add("W3", "growth, last/first", ms["last"] / ms["first"], "x", "lower")


def w4(report: Report, sizes: Sizes) -> None:
    n = sizes.w4_fanout
    with scratch_dir("w4") as folder, Runtime(_store(folder, "w4")) as rt:

        def once(width: int = n) -> float:
            started = time.perf_counter()
            assert rt.wait(rt.start(fan_out, width)) == width * (width + 1) // 2
            return time.perf_counter() - started

        once(max(10, n // 10))  # warm-up
        seconds = median_of(sizes.large_runs, once, warmup=False)
    report.add("W4", "wall time", seconds, "s", "lower")


def _history_shape(events: int) -> list[int]:
    width = min(500, max(1, (events - 2) // 2))
    return [max(1, round((events - 2) / (2 * width))), width]


def w5(report: Report, sizes: Sizes) -> None:
    shape = _history_shape(sizes.w5_events)
    with scratch_dir("w5") as folder, Runtime(_store(folder, "w5")) as rt:
        built = time.perf_counter()
        iid = rt.start(batches, shape)
        rt.wait(iid)
        built = time.perf_counter() - built
        history = rt.history(iid)

        def replay_only() -> float:
            started = time.perf_counter()
            replay_history(batches, history)
            return time.perf_counter() - started

        def load_and_replay() -> float:
            started = time.perf_counter()
            replay_history(batches, rt.history(iid))
            return time.perf_counter() - started

        # A second shape: one activity after the other (2 events each), a fifth as long.
        steps = max(10, sizes.w5_events // 10)
        seq_id = rt.start(sequence, steps)
        rt.wait(seq_id)
        seq_history = rt.history(seq_id)
        runs = sizes.small_runs * 3  # each run is short (12-60 ms): a shared machine's noise
        with _gc_frozen():
            seconds = median_of(runs, replay_only)
            with_load = median_of(runs, load_and_replay)
            sequential = median_of(runs, lambda: _timed_replay(sequence, seq_history))
    note = f"{shape[0]} x ctx.all of {shape[1]}; building it took {built:.1f}s"
    report.add(
        "W5", f"events/s ({len(history):,} events)", len(history) / seconds, "ev/s", note=note
    )
    report.add("W5", "events/s incl. loading from SQLite", len(history) / with_load, "ev/s")
    report.add(
        "W5",
        f"events/s, sequential history ({len(seq_history):,} events)",
        len(seq_history) / sequential,
        "ev/s",
        note=f"{steps:,} activities one after the other",
    )


@contextmanager
def _gc_frozen() -> Iterator[None]:
    """Leave what was built before the measurement out of the garbage collector's passes.

    A replay of 2,002 events takes about 12 ms; a full collection walking the runtime,
    the store and the histories built for the benchmark can double one such run, which
    measures the benchmark's heap rather than the engine. Garbage the replay itself
    makes is collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _timed_replay(wf: Any, history: Sequence[Any]) -> float:
    started = time.perf_counter()
    replay_history(wf, history)
    return time.perf_counter() - started


def w6(report: Report, sizes: Sizes) -> None:
    asleep = threading.Semaphore(0)

    def on_step(instance_id: str, decision: Any) -> None:
        if decision.wake_at is not None:
            asleep.release()

    with scratch_dir("w6") as folder, Runtime(_store(folder, "w6")) as rt:
        rt.add_listener(on_step)
        sleepers(
            report,
            sizes,
            start=lambda delay: rt.start(sleeper, delay),
            asleep=asleep,
            result=lambda iid: float(rt.wait(iid, timeout=600)),
        )


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6}


def run(argv: Sequence[str] | None = None) -> int:
    return main("durable", WORKLOADS, argv)


if __name__ == "__main__":
    raise SystemExit(run())
