"""Several workers, one store: 4 worker processes on one SQLite file drive 200 instances.

Every instance completes once with the right result; every history is valid
(no step committed twice, every completion recorded once); with no crash,
every activity runs exactly once (a worker never starts attempts that
another live worker dispatched); and no worker spins: conflicts and loads
per instance stay bounded. The figures are printed (``-s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from durable import Context, MemoryStore, Runtime, SQLiteStore, Status, activity, workflow
from durable.history import ActivityCompleted, ActivityScheduled
from durable.runtime.start import create_instance, encode_input
from durable.testing import EPOCH
from tests.reliability.harness import check_history
from tests.reliability.procs import expected_result, rel_pipeline

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
INSTANCES = 200
WAIT = 240.0


def _log_runs(log: Path) -> Counter[str]:
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


def _setup(tmp_path: Path, seconds: float) -> tuple[Path, Path, list[str]]:
    db, log = tmp_path / "durable.db", tmp_path / "runs.log"
    store = SQLiteStore(db)
    ids = [f"w{i:03d}" for i in range(INSTANCES)]
    try:
        payload = encode_input(rel_pipeline, {"log": str(log), "seconds": seconds})
        for iid in ids:
            create_instance(store, rel_pipeline, payload, iid, EPOCH)
    finally:
        store.close()
    return db, log, ids


def _spawn(db: Path, stats: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.reliability.procs", str(db), str(stats)]
    return subprocess.Popen([*command, str(INSTANCES)], cwd=ROOT, env=env)


def _wait_for_runs(log: Path, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while sum(_log_runs(log).values()) < count:
        assert time.monotonic() < deadline, "the workers made no progress"
        time.sleep(0.01)


def _check_store(db: Path, ids: list[str]) -> None:
    store = SQLiteStore(db)
    try:
        for iid in ids:
            header = store.get(iid)
            assert header is not None and header.status == Status.COMPLETED, (iid, header)
            assert header.output == expected_result(iid)
            history = store.history(iid)
            check_history(history, iid)
            scheduled = [e.task_id for e in history if isinstance(e, ActivityScheduled)]
            completed = [e.task_id for e in history if isinstance(e, ActivityCompleted)]
            assert sorted(completed) == sorted(scheduled) and len(scheduled) == 6
    finally:
        store.close()


def test_four_workers_on_one_sqlite_file(tmp_path: Path) -> None:
    """Three workers start together, the fourth joins while their activities are in flight."""
    db, log, ids = _setup(tmp_path, seconds=0.002)
    procs = [_spawn(db, tmp_path / f"s{n}") for n in range(WORKERS - 1)]
    try:
        _wait_for_runs(log, INSTANCES // 2)
        procs.append(_spawn(db, tmp_path / f"s{WORKERS - 1}"))
        for proc in procs:
            assert proc.wait(WAIT) == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    _check_store(db, ids)
    runs = _log_runs(log)
    assert set(runs) == {f"{iid}/{i}" for iid in ids for i in range(6)}
    twice = {key: n for key, n in runs.items() if n > 1}
    assert not twice, f"{len(twice)} activities ran more than once without any crash: {twice}"

    stats = [json.loads((tmp_path / f"s{n}").read_text()) for n in range(WORKERS)]
    attempts = sum(s["commit"] for s in stats)
    conflicts = sum(s["conflict"] for s in stats)
    commits = attempts - conflicts
    loads = sum(s["load"] for s in stats)
    print(
        f"\n{WORKERS} workers, {INSTANCES} instances: {commits} commits "
        f"({commits / INSTANCES:.1f} per instance), {conflicts} conflicts "
        f"({conflicts / INSTANCES:.2f} per instance), {loads} loads "
        f"({loads / INSTANCES:.1f} per instance); per worker: "
        + ", ".join(f"{s['load']} loads/{s['commit'] - s['conflict']} commits" for s in stats)
    )
    # Bounded work per instance: no worker spins on an instance another one holds.
    assert commits <= INSTANCES * 7
    assert conflicts <= INSTANCES * 2
    assert loads <= INSTANCES * 20


def test_the_other_workers_take_over_from_one_killed_mid_run(tmp_path: Path) -> None:
    """A worker SIGKILLed while its activities run: the three others notice (its lock file
    is free) and finish everything, without a restart."""
    db, log, ids = _setup(tmp_path, seconds=0.01)
    procs = [_spawn(db, tmp_path / f"s{n}") for n in range(WORKERS)]
    try:
        _wait_for_runs(log, INSTANCES)
        os.kill(procs[0].pid, signal.SIGKILL)
        assert procs[0].wait(WAIT) == -signal.SIGKILL
        # The others go on meanwhile: read what is recorded first, then count the runs, so
        # that a run counted after that point is one that began after its outcome was recorded.
        store = SQLiteStore(db)
        try:
            recorded = {
                f"{iid}/{e.task_id - 1}"  # task ids 1..6 are steps 0..5
                for iid in ids
                for e in store.history(iid)
                if isinstance(e, ActivityCompleted)
            }
        finally:
            store.close()
        at_kill = sum(_log_runs(log).values())
        for proc in procs[1:]:
            assert proc.wait(WAIT) == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    _check_store(db, ids)
    lines = [line.split()[0] for line in log.read_text().splitlines() if line.strip()]
    assert set(lines) == {f"{iid}/{i}" for iid in ids for i in range(6)}
    assert recorded
    again = recorded & set(lines[at_kill:])
    assert not again, f"recorded before the kill, ran again after it: {sorted(again)[:10]}"


GATE = threading.Event()
STARTS: list[str] = []


@activity(name="rel_gated")
def rel_gated(key: str) -> str:
    STARTS.append(key)
    if len(STARTS) == 1:
        assert GATE.wait(WAIT)  # the first attempt hangs until its runtime is gone
    return key


@workflow(name="rel_gated_flow")
def rel_gated_flow(ctx: Context, key: str) -> Generator[Any, Any, str]:
    result: str = yield ctx.call(rel_gated, key)
    return result


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_worker_that_stops_mid_activity_hands_it_to_a_live_one(kind: str, tmp_path: Path) -> None:
    """Closing abandons the attempts in flight; another runtime alive on the store is told
    (as of a death) and runs them, without waiting for a restart."""
    STARTS.clear()
    GATE.clear()
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "d.db")
    first = Runtime(store)
    try:
        iid = first.start(rel_gated_flow, "k")
        deadline = time.monotonic() + WAIT
        while not STARTS:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with Runtime(store) as second:  # the first is alive: nothing to adopt at start-up
            first.close()  # abandons the attempt
            assert second.wait(iid, timeout=WAIT) == "k"
        assert STARTS == ["k", "k"]
    finally:
        GATE.set()
        first.close()
        store.close()
