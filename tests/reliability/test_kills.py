"""Real process kills: a worker on a SQLite file, SIGKILLed at random moments, restarted.

Each round starts a worker process (``python -m tests.reliability.procs``, a
Runtime on the file, or ``durable worker --module`` on odd rounds), waits
until its activities have started a random number of times, kills it with
SIGKILL a random moment later, and reads what the store had recorded. Work
is topped up so that every round has something in flight. At the end a
worker drains the store. Checked: every instance completed with the right
result and a valid history, each activity's completion recorded once; no
activity whose completion was recorded before a kill ran again after it;
only attempts in flight at a kill ran more than once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from durable import SQLiteStore, Status
from durable.history import ActivityCompleted, ActivityScheduled, Event
from durable.runtime.start import create_instance, encode_input
from durable.testing import EPOCH
from tests.reliability.harness import check_history
from tests.reliability.procs import expected_result, rel_pipeline

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 32
SEED = 5
WAIT = 60.0
DURABLE = str(Path(sys.executable).with_name("durable"))


def _runs(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line.split()[0] for line in log.read_text().splitlines() if line.strip()]


def _completed(history: list[Event]) -> set[str]:
    key_of = {e.task_id: e.input["args"][0] for e in history if isinstance(e, ActivityScheduled)}
    return {key_of[e.task_id] for e in history if isinstance(e, ActivityCompleted)}


def _worker(db: Path, stats: Path, expected: int, cli: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cli:
        command = [DURABLE, "worker", "--module", "tests/reliability/procs.py", "--db", str(db)]
    else:
        command = [sys.executable, "-m", "tests.reliability.procs", str(db), str(stats)]
        command.append(str(expected))
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_workers_killed_at_random_moments_lose_and_repeat_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db, log = tmp_path / "durable.db", tmp_path / "runs.log"
    store = SQLiteStore(db)
    payload = encode_input(rel_pipeline, {"log": str(log), "seconds": 0.03})
    ids: list[str] = []
    recorded_at_kill: list[tuple[int, set[str]]] = []  # (log length, completions recorded)
    kills = 0
    try:
        for round_ in range(ROUNDS):
            # Keep work in flight every round, and enough activity runs left to reach
            # this round's target (a worker may finish every instance before the kill).
            unfinished = store.list_instances(status=[Status.PENDING, Status.RUNNING], limit=100)
            left = 6 * len(ids) - len(set(_runs(log)))
            while len(unfinished) < 4 or left < 7:
                ids.append(f"k{len(ids):03d}")
                create_instance(store, rel_pipeline, payload, ids[-1], EPOCH)
                unfinished.append(store.get(ids[-1]))  # type: ignore[arg-type]
                left += 6
            before = len(_runs(log))
            target = before + rng.randint(1, 6)
            proc = _worker(db, tmp_path / "stats", len(ids), cli=round_ % 2 == 1)
            try:
                deadline = time.monotonic() + WAIT
                while len(_runs(log)) < target:
                    assert proc.poll() is None, f"round {round_}: the worker ended on its own"
                    assert time.monotonic() < deadline, f"round {round_}: no progress"
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.05))
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait(WAIT)
            assert proc.returncode == -signal.SIGKILL
            kills += 1
            recorded = set().union(*(_completed(store.history(i)) for i in ids))
            recorded_at_kill.append((len(_runs(log)), recorded))

        final = _worker(db, tmp_path / "stats", len(ids), cli=False)
        assert final.wait(WAIT * 2) == 0

        for iid in ids:
            header = store.get(iid)
            assert header is not None and header.status == Status.COMPLETED, (iid, header)
            assert header.output == expected_result(iid)
            history = store.history(iid)
            check_history(history, iid)
            completions = [e.task_id for e in history if isinstance(e, ActivityCompleted)]
            assert len(completions) == len(set(completions)) == 6
    finally:
        store.close()

    runs = _runs(log)
    assert set(runs) == {f"{iid}/{i}" for iid in ids for i in range(6)}
    for at, recorded in recorded_at_kill:
        again = recorded & set(runs[at:])
        assert not again, f"recorded before a kill, ran again after it: {sorted(again)}"
    counts = Counter(runs)
    repeated = {key for key, n in counts.items() if n > 1}
    print(
        f"\n{kills} SIGKILLs, {len(ids)} instances, {len(runs)} activity runs, "
        f"{len(repeated)} re-run after a kill"
    )
    assert kills >= 30
    assert len(repeated) <= kills * 8  # only what was in flight (8 threads) at a kill
