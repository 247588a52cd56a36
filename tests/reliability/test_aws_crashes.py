"""Seeded crash schedules through the AWS loop (DynamoDB on moto, a simulated state machine).

Each schedule runs a case through :func:`~tests.reliability.aws_driver.drive_aws`
under a seeded crash schedule: Lambda invocations killed before or after
``create``, ``load``, ``commit``, ``post``, ``park`` and ``history`` (in the
orchestrator, in local activities, in activity invocations before and after
the activity ran), orchestrator responses lost after their work, results
delivered twice, orchestrators running out of time, executions handing over
to successors. Then, as for the local drivers: the same results and, task by
task, the same history, event for event, as the uninterrupted run (the one in which the
activity invocations that were killed failed as crashed, which is what the
state machine's ``ReportCrash`` makes of them), every history valid, no
activity with a recorded outcome run again, nothing left unfinished.

Default run: 9 examples x 4 seeds and 30 generated programs (local
activities, children, events, timers, continue-as-new) x 3 seeds (126 schedules), about
half a minute on moto; ``python -m tests.reliability.long_run --aws`` runs more. A
failure names the case and seed and the command replaying just that schedule.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections import Counter

from tests.reliability.aws_driver import Key, check_schedule, moto_tables
from tests.reliability.harness import EXAMPLE_CASES, Case, Outcome, program_case, reproduce_hint

BASE = 7_000
SEEDS_PER_EXAMPLE = 4
PROGRAMS = 30
SEEDS_PER_PROGRAM = 3


def schedules() -> list[tuple[Case, int]]:
    """The default run's (case, seed) pairs; every seed differs."""
    cases = [case for case in EXAMPLE_CASES for _ in range(SEEDS_PER_EXAMPLE)]
    cases += [
        program_case(BASE + p, local=True)
        for p in range(PROGRAMS)
        for _ in range(SEEDS_PER_PROGRAM)
    ]
    return [(case, BASE + i) for i, case in enumerate(cases)]


def test_the_aws_loop_survives_random_crash_schedules() -> None:
    kills: Counter[str] = Counter()
    failures: list[str] = []
    clean_runs: dict[tuple[str, frozenset[Key]], Outcome] = {}
    path: Counter[str] = Counter()
    started = time.monotonic()
    logging.disable(logging.CRITICAL)  # killed invocations log; not under test here
    try:
        with moto_tables() as tables, contextlib.redirect_stdout(io.StringIO()):
            for case, seed in schedules():
                try:
                    chaotic = check_schedule(case, seed, tables, clean_runs)
                except AssertionError as exc:
                    failures.append(f"{reproduce_hint(case.name, seed, 'aws')}: {exc}")
                    continue
                kills.update(chaotic.kills)
                kills["duplicate deliveries"] += chaotic.duplicated
                path.update(chaotic.path)
    finally:
        logging.disable(logging.NOTSET)
    seconds = time.monotonic() - started
    assert not failures, "\n".join(failures)
    count = len(schedules())
    crashed = sum(1 for _, attempts in clean_runs if attempts)
    print(
        f"\n{count} AWS crash schedules in {seconds:.1f}s ({len(clean_runs)} uninterrupted "
        f"runs, {crashed} with attempts failed as crashed); kills by boundary: "
        f"{dict(sorted(kills.items()))}; loop: {dict(sorted(path.items()))}"
    )
    for boundary in (
        "create.before",
        "load.before",
        "load.after",
        "commit.before",
        "commit.after",
        "post.before",
        "post.after",
        "history.before",
        "history.after",
        "orchestrate.response",
        "duplicate deliveries",
    ):
        assert kills[boundary] >= 3, (boundary, kills)
    for taken in ("recovery", "report crash", "route hand_over", "route continue", "woken"):
        assert path[taken] >= 3, (taken, path)
