"""A real crash: a process running a workflow on SQLite is killed with SIGKILL mid-run.

A child process starts the ``crash_pipeline`` workflow on a SQLite file and
drives it; every activity appends ``"<step> <pid>"`` to a log file when it
starts. Once the log shows progress, the test kills the process (no cleanup
of any kind runs), reads which completions the store had recorded at that
moment, and lets a new ``Runtime`` in this process finish the instance.

Checked: the result is right; no activity whose completion was recorded
before the kill ran again (one in flight may have); the history is valid
and replays against the code without non-determinism.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from durable import Context, Runtime, SQLiteStore, Status, activity, workflow
from durable.history import (
    ActivityCompleted,
    ActivityScheduled,
    Event,
    WorkflowCompleted,
    WorkflowStarted,
    dump_history,
    load_history,
)
from durable.replay import replay

ROOT = Path(__file__).resolve().parent.parent
STEPS = 9
WAIT = 60.0  # seconds: generous bound for a slow, shared machine
INSTANCE = "crash-1"


class Job(BaseModel):
    log: str
    step_seconds: float = 0.15


@activity(name="crash.step")
def crash_step(i: int, log: str, seconds: float) -> int:
    with open(log, "a") as f:  # one short line per run, appended atomically
        f.write(f"{i} {os.getpid()}\n")
    time.sleep(seconds)
    return i * i


@workflow(name="crash_pipeline")
def crash_pipeline(ctx: Context, job: Job) -> Generator[Any, Any, list[int]]:
    """Three steps in a row, a timer, three in parallel, three in a row."""
    results: list[int] = []
    for i in range(3):
        results.append((yield ctx.call(crash_step, i, job.log, job.step_seconds)))
    yield ctx.sleep(timedelta(milliseconds=50))
    results += yield ctx.all(
        [ctx.call(crash_step, i, job.log, job.step_seconds) for i in (3, 4, 5)]
    )
    for i in range(6, STEPS):
        results.append((yield ctx.call(crash_step, i, job.log, job.step_seconds)))
    return results


def _child_main(db: str, log: str) -> None:
    """What the child process runs: start (or resume) the instance and drive it."""
    with Runtime(db) as runtime:
        runtime.start(crash_pipeline, Job(log=log), instance_id=INSTANCE)
        runtime.wait(INSTANCE, timeout=WAIT)


def _runs(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return [(int(step), int(pid)) for step, pid in lines]


def _completed_steps(history: list[Event]) -> set[int]:
    step_of = {
        e.task_id: e.input["args"][0]
        for e in history
        if isinstance(e, ActivityScheduled) and e.activity == "crash.step"
    }
    return {step_of[e.task_id] for e in history if isinstance(e, ActivityCompleted)}


def _check_history(history: list[Event]) -> None:
    assert isinstance(history[0], WorkflowStarted)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert isinstance(history[-1], WorkflowCompleted)
    scheduled = [e.task_id for e in history if isinstance(e, ActivityScheduled)]
    completed = [e.task_id for e in history if isinstance(e, ActivityCompleted)]
    assert len(scheduled) == len(set(scheduled)) == STEPS  # one attempt each: none failed
    assert sorted(completed) == sorted(scheduled)  # each recorded exactly once
    assert load_history(dump_history(history)) == history
    # The finished history replays against the code with nothing new to decide.
    decision = replay(crash_pipeline, history, [], datetime.now(UTC), instance_id=INSTANCE)
    assert decision.stuck is None
    assert (decision.status, decision.events) == (Status.COMPLETED, [])


@pytest.mark.parametrize("kill_after_runs", [2, 5])
def test_sigkill_mid_run_then_a_new_runtime_finishes(tmp_path: Path, kill_after_runs: int) -> None:
    db = tmp_path / "crash.db"
    log = tmp_path / "runs.log"
    code = "import sys; from tests.test_crash import _child_main; _child_main(sys.argv[1], sys.argv[2])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(log)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + WAIT
        while len(_runs(log)) < kill_after_runs:
            assert proc.poll() is None, "the child process ended before it was killed"
            assert time.monotonic() < deadline, "the child process made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL

    store = SQLiteStore(db)
    try:
        assert store.get(INSTANCE).status == Status.RUNNING  # type: ignore[union-attr]
        recorded_before = _completed_steps(store.history(INSTANCE))
    finally:
        store.close()
    runs_before = _runs(log)
    assert recorded_before, "the kill came before any completion was recorded"
    assert len(recorded_before) < STEPS

    with Runtime(f"sqlite:///{db}") as runtime:
        assert runtime.wait(INSTANCE, timeout=WAIT) == [i * i for i in range(STEPS)]
        history = runtime.history(INSTANCE)

    runs_after = _runs(log)[len(runs_before) :]
    assert {pid for _, pid in runs_after} <= {os.getpid()}
    rerun = {step for step, _ in runs_after} & {step for step, _ in runs_before}
    assert not rerun & recorded_before, "an activity whose completion was recorded ran again"
    # Only what was in flight at the kill may have run twice; every step ran at least once.
    counts = Counter(step for step, _ in _runs(log))
    assert set(counts) == set(range(STEPS))
    assert all(n <= 2 for n in counts.values())
    assert {step for step, n in counts.items() if n == 2} == rerun
    _check_history(history)
