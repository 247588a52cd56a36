"""Shared helpers of the benchmark scripts: timing, rows, the command line, the table.

Every ``bench_*.py`` script measures one system (``durable`` or a peer) on some
of the workloads W1..W6 and reports :class:`Row` s; ``run_all.py`` runs each
(system, workload) pair in a fresh process and prints them side by side.
Only the standard library is used here, so that a peer's script can import it
without importing ``durable``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

H = TypeVar("H")

WORKLOADS = {
    "W1": "1 workflow, 100 sequential trivial activities",
    "W2": "200 concurrent workflows x 10 steps",
    "W3": "1 workflow, 1,000 steps, a 1 s timer every 10 steps (time skipping)",
    "W4": "fan-out of 1,000 activities, fan-in",
    "W5": "cold replay of a 10,000-event history",
    "W6": "10,000 instances sleeping on timers at once (20-30 s)",
}


@dataclass
class Row:
    """One figure: ``value`` in ``unit``; ``better`` is ``"higher"`` or ``"lower"``."""

    workload: str
    metric: str
    value: float | None
    unit: str = ""
    better: str = "higher"
    note: str = ""


@dataclass
class Report:
    """What one script run found: its rows, and workloads it could not run (and why)."""

    system: str
    rows: list[Row] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        workload: str,
        metric: str,
        value: float | None,
        unit: str = "",
        better: str = "higher",
        note: str = "",
    ) -> None:
        self.rows.append(Row(workload, metric, value, unit, better, note))

    def to_json(self) -> str:
        return json.dumps(
            {"system": self.system, "rows": [asdict(r) for r in self.rows], "not_run": self.not_run}
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        return cls(data["system"], [Row(**r) for r in data["rows"]], data["not_run"])


@dataclass
class Sizes:
    """Workload sizes and repeat counts: the full set, or ``--quick`` (a smoke run)."""

    quick: bool
    w1_steps: int = 100
    w2_workflows: int = 200
    w2_steps: int = 10
    w3_steps: int = 1_000
    w4_fanout: int = 1_000
    w5_events: int = 10_000
    w6_instances: int = 10_000
    w6_min_sleep: float = 20.0
    w6_spread: float = 10.0
    w6_launch_budget: float = 60.0
    small_runs: int = 5
    large_runs: int = 3

    @classmethod
    def make(cls, quick: bool) -> Sizes:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            w1_steps=20,
            w2_workflows=20,
            w2_steps=5,
            w3_steps=50,
            w4_fanout=50,
            w5_events=1_000,
            w6_instances=100,
            w6_min_sleep=1.0,
            w6_spread=1.0,
            w6_launch_budget=10.0,
            small_runs=1,
            large_runs=1,
        )


def median_of(runs: int, measure: Callable[[], float], *, warmup: bool = True) -> float:
    """Call ``measure`` once to warm up (unless told not to), then ``runs`` times; the median."""
    if warmup:
        measure()
    return statistics.median(measure() for _ in range(runs))


def step_times(marks: Sequence[float], seconds: float, steps: int, window: int) -> dict[str, float]:
    """W3's ms/step overall, over the first ``window`` steps and over the last (from step marks)."""
    first = (marks[window] - marks[0]) / window
    last = (marks[steps - 1] - marks[steps - 1 - window]) / window
    return {"all": seconds / steps * 1000, "first": first * 1000, "last": last * 1000}


def median_dict(runs: int, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The per-key median of ``runs`` calls of ``measure`` (no warm-up: the caller does it)."""
    results = [measure() for _ in range(runs)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def rss_mb(pid: int | None = None) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MB, from /proc (Linux)."""
    current = peak = 0.0
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return current, peak


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder for a run's database files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"durable-perf-{prefix}-") as folder:
        yield Path(folder)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> None:
    """A Markdown table, columns padded to line up in a terminal too."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")


def print_report(report: Report) -> None:
    """One system's figures, as a table."""
    lines = [[r.workload, r.metric, fmt(r.value), r.unit, r.note] for r in report.rows] + [
        [w, f"not run: {why}", "-", "", ""] for w, why in report.not_run.items()
    ]
    print(f"\n{report.system}:")
    print_table(["workload", "metric", "value", "unit", "note"], lines)
    sys.stdout.flush()


def sleepers(
    report: Report,
    sizes: Sizes,
    start: Callable[[float], H],
    asleep: threading.Semaphore,
    result: Callable[[H], float],
) -> None:
    """W6 for any system: start instances that sleep 20-30 s; memory while they sleep; lateness.

    ``start(delay)`` starts one instance sleeping ``delay`` seconds and returns
    a handle, ``asleep`` is released once by each instance when its timer is
    set, ``result(handle)`` waits for the instance and returns how late (in
    seconds) it woke. Starting stops after ``sizes.w6_launch_budget`` seconds.
    """
    count = sizes.w6_instances
    delays = [sizes.w6_min_sleep + sizes.w6_spread * i / count for i in range(count)]
    before, _ = rss_mb()
    started = time.perf_counter()
    handles = []
    for delay in delays:
        if time.perf_counter() - started > sizes.w6_launch_budget:
            break
        handles.append(start(delay))
    launched = time.perf_counter() - started
    for _ in handles:
        if not asleep.acquire(timeout=sizes.w6_launch_budget):
            break
    all_asleep = time.perf_counter() - started
    sleeping_rss, _ = rss_mb()
    late = [result(handle) for handle in handles]
    _, peak = rss_mb()
    note = f"started in {launched:.1f}s, all asleep after {all_asleep:.1f}s"
    if all_asleep > sizes.w6_min_sleep:
        note += " (after the first were due)"
    budget = "" if len(handles) == count else f"the {sizes.w6_launch_budget:.0f}s budget ran out"
    report.add("W6", "started", len(handles), f"of {count:,}", note=budget)
    report.add("W6", "RSS while all sleep", sleeping_rss, "MB", "lower", note)
    per_instance = (sleeping_rss - before) * 1024 / max(1, len(handles))
    report.add("W6", "RSS per sleeping instance", per_instance, "KB", "lower")
    report.add("W6", "peak RSS", peak, "MB", "lower", f"{before:.0f} MB before starting")
    report.add("W6", "fired", len(late), f"of {count:,}")
    report.add("W6", "lateness p50", percentile(late, 50), "s", "lower")
    report.add("W6", "lateness p99", percentile(late, 99), "s", "lower")
    report.add("W6", "lateness max", max(late), "s", "lower")


Workload = Callable[[Report, Sizes], None]


def main(system: str, workloads: dict[str, Workload], argv: Sequence[str] | None = None) -> int:
    """The command line every ``bench_*.py`` shares: ``[--quick] [--only W1,W3] [--json FILE]``."""
    parser = argparse.ArgumentParser(description=f"benchmarks of {system}")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    sizes = Sizes.make(args.quick)
    wanted = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(workloads)
    report = Report(system)
    for name in wanted:
        if name not in workloads:
            report.not_run[name] = f"{system} has no {name} benchmark"
            continue
        started = time.perf_counter()
        try:
            workloads[name](report, sizes)
        except Exception as exc:  # a workload that breaks is reported, the others still run
            report.not_run[name] = f"{type(exc).__name__}: {exc}"[:200]
        print(f"# {system} {name} took {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print_report(report)
    if args.json is not None:
        args.json.write_text(report.to_json())
    return 0
