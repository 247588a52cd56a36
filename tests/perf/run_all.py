"""Run every benchmark, ours and the peers', and print one table side by side.

Each (system, workload) pair runs in a fresh Python process, one after the
other, workload by workload, so that the figures compared were taken on the
same machine minutes apart and a process's memory is its own workload's.
A peer that is not installed or fails is shown as "not run: <reason>".

    bash tests/perf/run.sh [--quick] [--no-peers] [--only W1,W3]   # sets up .venv-perf
    python -m tests.perf [--quick] [--no-peers] [--only W1,W3]       # in an environment that has them
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from tests.perf.common import WORKLOADS, Report, Row, Sizes, fmt, print_table

ROOT = Path(__file__).resolve().parents[2]

SYSTEMS = [
    ("durable", "tests.perf.bench_durable", ["W1", "W2", "W3", "W4", "W5", "W6"], "durable"),
    ("DBOS", "tests.perf.bench_dbos", ["W1", "W2", "W4", "W6"], "dbos"),
    (
        "AWS local runner",
        "tests.perf.bench_aws",
        ["W1", "W3"],
        "aws-durable-execution-sdk-python-testing",
    ),
]

DURABILITY = [
    "durable: SQLite WAL, synchronous=FULL (every step's commit is fsynced), unless a row says NORMAL.",
    "DBOS: SQLite system database with SQLite's defaults (rollback journal, synchronous=FULL:"
    " every checkpoint fsynced); sync workflows on its thread pool; W4 fans out with"
    " Queue.enqueue (default 1 s queue polling).",
    "AWS local runner: DurableFunctionTestRunner with its default in-memory store: no disk"
    " writes at all, so no durability (not equivalent); the W1 synchronous=NORMAL row runs it"
    " on its SQLiteExecutionStore (WAL, synchronous=NORMAL), beside ours with synchronous=NORMAL.",
]

WORKLOAD_SIZES = {"W6": (Sizes.make(False).w6_instances, Sizes.make(True).w6_instances)}

ROUNDED = {"W1", "W2", "W3", "W5"}
"""Workloads short enough to run in several rounds, the systems taking turns (load varies)."""

TIMEOUT = 1800  # seconds for one (system, workload) process


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for _, _, _, dist in SYSTEMS:
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} not installed")
    return [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores ({cpu}),"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()}",
        ", ".join(versions),
        "load average (1, 5, 15 min) at the end: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg())
        + " (other processes share the machine)",
    ]


def run_one(module: str, workload: str, quick: bool, folder: Path) -> Report:
    """One workload of one system in a fresh process; its report (or why it did not run)."""
    out = folder / f"{module}-{workload}.json"
    command = [sys.executable, "-m", module, "--only", workload, "--json", str(out)]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        report = Report(module)
        report.not_run[workload] = f"timed out after {TIMEOUT}s"
        return report
    took = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        report = Report(module)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        report.not_run[workload] = f"exit {proc.returncode}: {last[:150]}"
        return report
    report = Report.from_json(out.read_text())
    print(f"  {report.system} {workload}: {took:.1f}s", file=sys.stderr, flush=True)
    return report


def merge(runs: Sequence[Report]) -> Report:
    """One report from several rounds of the same workload: each figure's median."""
    merged = Report(runs[0].system)
    values: dict[tuple[str, str], list[float]] = {}
    for report in runs:
        for row in report.rows:
            key = (row.workload, row.metric)
            if key not in values:
                values[key] = []
                merged.rows.append(row)
            if row.value is not None:
                values[key].append(row.value)
        for workload, why in report.not_run.items():
            merged.not_run.setdefault(workload, why)
    for row in merged.rows:
        found = values[(row.workload, row.metric)]
        row.value = statistics.median(found) if found else None
    if merged.rows:  # a round that failed while others ran: their figures stand
        measured = {workload for workload, _ in values}
        merged.not_run = {w: why for w, why in merged.not_run.items() if w not in measured}
    return merged


def advantage(ours: Row, peer: Row | None, peer_rows: dict[tuple[str, str], Row]) -> str:
    """How many times better ours is (>1: ours better), or "" when a ratio means nothing."""
    if peer is None or ours.value is None or peer.value is None:
        return ""
    if ours.metric in ("fired", "started") or ours.metric.startswith("lateness"):
        return ""
    started = peer_rows.get(("W6", "started"))
    if ours.workload == "W6" and started is not None and started.note and "per" not in ours.metric:
        return ""  # the peer did not start them all: only the per-instance figure compares
    if ours.value <= 0 or peer.value <= 0:
        return ""
    ratio = ours.value / peer.value if ours.better == "higher" else peer.value / ours.value
    return f"{ratio:.2f}x"


def combined(reports: dict[str, list[Report]]) -> None:
    """The side-by-side table: ours, then each peer and how ours compares (>1: ours better)."""
    peers = [name for name, _, _, _ in SYSTEMS[1:]]
    by_key: dict[str, dict[tuple[str, str], Row]] = {}
    not_run: dict[str, dict[str, str]] = {}
    order: list[tuple[str, str]] = []
    for name, found in reports.items():
        by_key[name] = {}
        not_run[name] = {}
        for report in found:
            for row in report.rows:
                by_key[name][(row.workload, row.metric)] = row
                if (row.workload, row.metric) not in order and name == "durable":
                    order.append((row.workload, row.metric))
            not_run[name].update(report.not_run)
    for name in peers:  # a peer's figure we have no counterpart of still shows
        for key in by_key.get(name, {}):
            if key not in order:
                order.append(key)
    order.sort(key=lambda key: key[0])  # stable: by workload, metrics in their order
    headers = ["workload", "metric", "durable"]
    for name in peers:
        headers += [name, f"vs {name}"]
    lines = []
    for workload, metric in order:
        ours = by_key["durable"].get((workload, metric))
        unit = next(
            (by_key[n][(workload, metric)].unit for n in by_key if (workload, metric) in by_key[n]),
            "",
        )
        line = [workload, f"{metric} ({unit})" if unit and unit not in metric else metric]
        line.append(fmt(ours.value) if ours else _missing(not_run["durable"], workload))
        for name in peers:
            peer = by_key.get(name, {}).get((workload, metric))
            systems_workloads = next(w for n, _, w, _ in SYSTEMS if n == name)
            if peer is not None:
                line += [fmt(peer.value), advantage(ours, peer, by_key[name]) if ours else ""]
            elif workload in not_run.get(name, {}):
                line += [f"not run: {not_run[name][workload]}", ""]
            elif workload in systems_workloads:
                line += ["-", ""]
            else:
                line += ["", ""]
        lines.append(line)
    for workload, why in not_run["durable"].items():
        lines.append([workload, f"not run: {why}", "-"] + [""] * (2 * len(peers)))
    print_table(headers, lines)
    notes = [
        f"* {name} {row.workload} {row.metric}: {row.note}"
        for name, rows in by_key.items()
        for row in rows.values()
        if row.note
    ]
    if notes:
        print("\nNotes:\n")
        print("\n".join(notes))


def _missing(not_run: dict[str, str], workload: str) -> str:
    return f"not run: {not_run[workload]}" if workload in not_run else "-"


def targets(reports: dict[str, list[Report]], quick: bool) -> None:
    """The issue's targets, each with the figure it is judged on."""
    rows: dict[tuple[str, str, str], float | None] = {}
    for name, found in reports.items():
        for report in found:
            for row in report.rows:
                rows[(name, row.workload, row.metric)] = row.value

    def get(name: str, workload: str, metric: str) -> float | None:
        return rows.get((name, workload, metric))

    def check(label: str, value: float | None, goal: str, ok: bool | None) -> list[str]:
        verdict = "n/a" if ok is None else ("met" if ok else "NOT met")
        shown = "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
        return [label, goal, shown, verdict]

    lines = []
    for w in ("W1", "W2"):
        ours, dbos = get("durable", w, "steps/s"), get("DBOS", w, "steps/s")
        ratio = ours / dbos if ours and dbos else None
        lines.append(
            check(f"{w} steps/s vs DBOS", ratio, ">= 3x", None if ratio is None else ratio >= 3)
        )
    w3, w1 = get("durable", "W3", "ms/step"), get("durable", "W1", "ms/step")
    ratio = w3 / w1 if w3 and w1 else None
    lines.append(
        check("W3 ms/step / W1 ms/step", ratio, "<= 1.2x", None if ratio is None else ratio <= 1.2)
    )
    growth = get("durable", "W3", "growth, last/first")
    lines.append(
        check(
            "W3 growth, last 100 / first 100 steps",
            growth,
            "flat (~1x)",
            None if growth is None else growth <= 1.2,
        )
    )
    aws = get("AWS local runner", "W3", "growth, last/first")
    lines.append(check("W3 growth of the AWS runner", aws, "(issue: ~6x)", None))
    for label, pick in (
        ("W5 events/s, fan-out history", lambda m: m.startswith("events/s (")),
        ("W5 events/s, sequential history", lambda m: "sequential" in m),
    ):
        w5 = next(
            (v for (n, w, m), v in rows.items() if n == "durable" and w == "W5" and pick(m)), None
        )
        lines.append(check(label, w5, ">= 100,000", None if w5 is None else w5 >= 100_000))
    rss = get("durable", "W6", "RSS while all sleep")
    fired, started = get("durable", "W6", "fired"), get("durable", "W6", "started")
    wanted = WORKLOAD_SIZES["W6"][1 if quick else 0]
    all_fired = fired == started == wanted
    lines.append(
        check(
            "W6 RSS while all sleep (MB)",
            rss,
            "< 500 MB, all fired",
            None if rss is None else rss < 500 and all_fired,
        )
    )
    print_table(["target", "goal", "measured", "verdict"], lines)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run every benchmark and print one table")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--no-peers", action="store_true", help="only durable's own figures")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of W1, W2, W3 and W5, the systems taking turns; each figure is their median",
    )
    args = parser.parse_args(argv)
    wanted = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    systems = SYSTEMS[:1] if args.no_peers else SYSTEMS
    began = time.perf_counter()
    reports: dict[str, list[Report]] = {name: [] for name, _, _, _ in systems}
    with tempfile.TemporaryDirectory(prefix="durable-perf-") as folder:
        for workload in wanted:
            rounds = 1 if args.quick or workload not in ROUNDED else max(1, args.rounds)
            found: dict[str, list[Report]] = {name: [] for name, _, _, _ in systems}
            for round_ in range(rounds):
                for name, module, has, _ in systems:
                    if workload in has:
                        print(
                            f"running {name} {workload} (round {round_ + 1} of {rounds}) ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        found[name].append(run_one(module, workload, args.quick, Path(folder)))
            for name, runs in found.items():
                if runs:
                    reports[name].append(merge(runs))
    total = time.perf_counter() - began
    print("\n## Benchmarks" + (" (--quick: small sizes, not comparable)" if args.quick else ""))
    print()
    for line in machine():
        print(f"* {line}")
    print()
    for workload in wanted:
        print(f"* {workload}: {WORKLOADS[workload]}")
    print()
    if not args.quick:
        print(
            f"Each figure: the median of 5 runs (W1), 15 (W5) or 3 (the others) after a warm-up, in a"
            f" fresh process per system and workload; W1, W2, W3 and W5: the median of {args.rounds}"
            " such rounds, the systems taking turns.\n"
        )
    combined(reports)
    print(
        '\n"vs X": how many times better durable is than X (above 1: durable is better).'
        " Lateness: from a timer's due time to its workflow resuming. RSS per sleeping"
        " instance: (RSS while all sleep - RSS before starting) / instances."
    )
    print()
    for line in DURABILITY:
        print(f"* {line}")
    print()
    targets(reports, args.quick)
    print(f"\nTotal run time: {total:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
