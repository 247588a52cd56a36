"""Crash schedules: every example and generated workflows, killed at every store boundary.

Each schedule runs a case twice: uninterrupted, and under a seeded
:class:`~tests.reliability.harness.FaultPlan` that kills the worker before or
after ``create``, ``load``, ``commit`` and an activity's ``post``, and between
a step and the dispatch of its activities, and delivers results twice. After
each: the same results and (for the step driver) the same history as the
uninterrupted run, every history valid, no recorded activity run again, no
instance left unfinished. A failure names the case and seed and the command
that replays just that schedule.

Default run: 216 example schedules + 480 generated programs on the step
driver, and 100 on the real ``Runtime``; ``long_run.py`` runs thousands more.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from durable import Runtime, Status
from durable.replay import Decision
from durable.store import MemoryStore
from tests.reliability.harness import (
    EXAMPLE_CASES,
    IID,
    Case,
    FaultPlan,
    check_outcome,
    drive,
    drive_runtime,
    program_case,
    rel_program,
    reproduce_hint,
)

SEEDS_PER_EXAMPLE = 12
PROGRAM_SEEDS = 480
PROGRAM_CHUNK = 40
RUNTIME_SCHEDULES = 100
BASE = 1_000
KILLS: Counter[str] = Counter()
"""Every kill of the default run, by boundary (checked by the last test of this file)."""


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The examples print and dead runtimes log their crashes: neither is under test here."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _run(case: Case, seed: int, store: str, driver: str = "step") -> str | None:
    """One schedule; ``None`` if every invariant holds, else what failed and how to replay it."""
    try:
        if driver == "step":
            clean = drive(case, None, store)
            chaotic = drive(case, seed, store)
            check_outcome(clean, chaotic)
        else:
            clean = drive_runtime(case, None, store)
            chaotic = drive_runtime(case, seed, store)
            check_outcome(clean, chaotic, same_history=False)
    except AssertionError as exc:
        plan = FaultPlan(seed)
        return f"{reproduce_hint(case.name, seed, driver)} (rate {plan.rate}): {exc}"
    KILLS.update(chaotic.kills)
    KILLS["duplicate deliveries"] += chaotic.duplicated
    KILLS["schedules"] += 1
    return None


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("case", EXAMPLE_CASES, ids=[c.name for c in EXAMPLE_CASES])
def test_examples_survive_crash_schedules(case: Case, store: str) -> None:
    failures = [
        failure
        for seed in range(BASE, BASE + SEEDS_PER_EXAMPLE)
        if (failure := _run(case, seed, store)) is not None
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("start", range(0, PROGRAM_SEEDS, PROGRAM_CHUNK))
def test_generated_workflows_survive_crash_schedules(start: int) -> None:
    failures = []
    for seed in range(BASE + start, BASE + start + PROGRAM_CHUNK):
        failure = _run(program_case(seed), seed, "sqlite" if seed % 2 else "memory")
        if failure is not None:
            failures.append(failure)
    assert not failures, "\n".join(failures)


def runtime_case(index: int) -> Case:
    """Cases the Runtime driver can run: events raised early or never, outcomes that do not
    depend on the attempt number or the wall clock."""
    examples = [c for c in EXAMPLE_CASES if all(when != "waiting" for _, _, when in c.events)]
    if index % 2 == 0:
        return examples[index // 2 % len(examples)]
    return program_case(BASE + index, steady=True)


def test_the_real_runtime_recovers_from_crash_schedules() -> None:
    logging.disable(logging.CRITICAL)  # dead runtimes log every fenced call
    try:
        failures = []
        for index in range(RUNTIME_SCHEDULES):
            case = runtime_case(index)
            store = "sqlite" if index % 4 == 1 else "memory"
            failure = _run(case, BASE + index, store, driver="runtime")
            if failure is not None:
                failures.append(failure)
    finally:
        logging.disable(logging.NOTSET)
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- transient errors


class FlakyStore(MemoryStore):
    """A memory store whose ``ready`` and the commits recording activity results fail
    now and then, as a busy or full disk makes SQLite fail (``database is locked``,
    ``disk I/O error``)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.lock = threading.Lock()
        self.failed: Counter[str] = Counter()

    def _fail(self, what: str) -> None:
        with self.lock:
            if self.failed[what] < self.failures:
                self.failed[what] += 1
                raise sqlite3.OperationalError(f"database is locked ({what})")

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        self._fail("ready")
        return super().ready(now, limit)

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        if any(e.kind == "ActivityCompleted" for e in decision.events):
            self._fail("commit")
        return super().commit(decision, expected_version=expected_version, on_ready=on_ready)


def test_transient_store_errors_neither_stop_the_scheduler_nor_lose_a_result() -> None:
    """A result whose step could not commit for a while is committed later, in the same
    runtime; a failing poll of ready instances does not end the scheduler thread."""
    store = FlakyStore(failures=6)
    spec: dict[str, Any] = {
        "ops": [{"op": "call", "key": "a", "fail": 0, "attempts": 1, "interval": 0}]
    }
    logging.disable(logging.CRITICAL)
    try:
        with Runtime(store, time_skipping=True) as runtime:
            iid = runtime.start(rel_program, {**spec, "loops": 0}, instance_id=IID)
            assert runtime.wait(iid, timeout=30) == ["a@1"]
            assert runtime._thread.is_alive()
    finally:
        logging.disable(logging.NOTSET)
    assert store.failed["commit"] == 6
    assert store.failed["ready"] >= 1
    header = store.get(IID)
    assert header is not None and header.status == Status.COMPLETED


def test_every_boundary_was_hit() -> None:
    """The schedules above are not vacuous: each boundary killed a worker many times."""
    if KILLS["schedules"] < 500:
        pytest.skip("runs only after the whole file (e.g. not with -k)")
    for boundary in (
        "create.before",
        "create.after",
        "load.before",
        "load.after",
        "commit.before",
        "commit.after",
        "commit.ready",
        "post.before",
        "post.after",
        "dispatch",
        "duplicate deliveries",
    ):
        assert KILLS[boundary] >= 10, (boundary, KILLS)
    print(f"\n{KILLS['schedules']} crash schedules; kills by boundary: {dict(KILLS)}")
