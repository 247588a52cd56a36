"""The benchmark scripts (tests/perf) still run: durable's side, quick sizes, no peers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_of_durable_complete_and_print_every_workload() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.perf.bench_durable", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not run" not in proc.stdout, proc.stdout
    rows = [
        line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| W")
    ]
    for workload in ("W1", "W2", "W3", "W4", "W5", "W6"):
        assert workload in rows, proc.stdout


def test_where_time_goes_accounts_for_every_part_of_a_step() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.perf.where_time_goes", "--steps", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = {
        line.rsplit(" ", 2)[0].strip(): float(line.split()[-2])
        for line in proc.stdout.splitlines()[1:]
    }
    assert set(figures) == {
        "load",
        "commit: writes",
        "commit: starting the activities",
        "commit: COMMIT (the fsync)",
        "the rest (replay, bookkeeping, waiting)",
    }, proc.stdout
    parts = [ms for what, ms in figures.items() if not what.startswith("the rest")]
    assert all(ms > 0 for ms in parts), proc.stdout
