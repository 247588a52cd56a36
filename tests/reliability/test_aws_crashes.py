"""Seeded crash schedules through the AWS loop (DynamoDB on moto, a simulated state machine).

Each schedule runs a case through :func:`~tests.reliability.aws_driver.drive_aws`
(the one-task loop of ``infra/statemachine.asl.json``: ``Orchestrate`` answers its
own token) under a seeded crash schedule: the orchestrator killed before or after
``create``, ``load``, ``commit``, ``post``, ``park`` and ``history``, after its
synchronous activity calls came back, while starting asynchronous ones, before
or after answering its token, its response lost after its work, its invocation
throttled, its time running short; activities killed before or after reading
their attempt, after running it, before or after posting; rounds of synchronous
calls running past ``reply_by``; invocations lost (found after
``LOST_AFTER_SECONDS``); results and asynchronous events delivered twice; parks
racing the posts they wait for; a waker's ``SendTaskSuccess`` failing; parks
timing out (timers due); executions handing over to successors. Then, as for the
local drivers: the same results and, task by task, the same history, event for
event, as the uninterrupted run (the one in which the same attempts' synchronous
invocations died, ``ActivityCrashed``, and the same attempts were lost), every
history valid, no activity with a recorded outcome run again, nothing left
unfinished, every execution ended as its instance did.

Default run: 9 examples x 4 seeds and 30 generated programs (local
activities, children, events, timers, continue-as-new) x 3 seeds (126 schedules), under
a minute on moto; ``python -m tests.reliability.long_run --aws`` runs more. A
failure names the case and seed and the command replaying just that schedule.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections import Counter
from collections.abc import Generator
from typing import Any

from durable import Context, workflow
from examples.human_approval import ExpenseRequest, expense_approval
from tests.reliability.aws_driver import Key, check_schedule, moto_tables, run_for, same_task
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
    clean_runs: dict[tuple[str, frozenset[Key], frozenset[Key]], Outcome] = {}
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
    crashed = sum(1 for _, attempts, _ in clean_runs if attempts)
    lost = sum(1 for _, _, attempts in clean_runs if attempts)
    print(
        f"\n{count} AWS crash schedules in {seconds:.1f}s ({len(clean_runs)} uninterrupted "
        f"runs, {crashed} with attempts failed as crashed, {lost} with attempts lost); "
        f"kills by boundary: "
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
        "park.before",
        "park.after",
        "dispatch.after",
        "start",
        "answer.before",
        "answer.after",
        "orchestrate.response",
        "activity.reply",
        "handover.response",
        "duplicate deliveries",
    ):
        assert kills[boundary] >= 3, (boundary, kills)
    for taken in (
        "> PrepareRecovery",  # a failed orchestrator, recovered
        "> TimerDue",  # a park timed out: its timer is due
        "> HandedOver",  # a successor execution took over
        "answer continue",
        "answer mail",  # a park refused: mail came in
        "answer repark",
        "answer park",
        "answer sleep",
        "woken",  # a post answered a parked task
        "sync call died",  # ActivityCrashed
        "slow rounds",  # calls past reply_by, posted by the activities
        "attempts lost",  # found after LOST_AFTER_SECONDS, dispatched again
        "async retry",
        "async event delivered again",
        "race: posts before the park",
        "race: posts after the park",
        "wake failed: posted again",
        "start: already exists",  # a retried hand-over
        "throttled",
    ):
        assert path[taken] >= 3, (taken, path)


@workflow(name="rel_wait_forever")
def wait_forever(ctx: Context, _: None) -> Generator[Any, Any, Any]:
    """Waits for an event that never comes, with no timeout."""
    return (yield ctx.wait_for_event("never"))


def test_an_instance_waiting_longer_than_a_year_hands_over_before_the_execution_limit() -> None:
    """Parks that time out a week at a time: the execution hands over by its age."""
    with moto_tables() as tables:
        executions = run_for(wait_forever, None, 400, tables)
    ends = [(e.name, e.end) for e in executions]
    assert all(e.end != "ExecutionTimedOut" for e in executions), ends
    assert any(e.end == "HandedOver" for e in executions), ends


def test_the_lowest_hand_over_threshold_lets_a_one_day_wait_end() -> None:
    """An iteration counts 20 events however long it waits: every execution makes progress."""
    with moto_tables() as tables:
        executions = run_for(
            expense_approval,
            ExpenseRequest(request_id="r9", requester="Ada", amount=1200),
            30,
            tables,
            hand_over_events=50,
            rounds=2_000,
        )
    ends = Counter(e.end for e in executions)
    assert ends["Finished"] == 1, ends


def test_the_comparison_lets_a_crash_delay_a_retry_but_nothing_else() -> None:
    """Seed 50181: a recovery re-dispatched an attempt whose invocations kept being lost,
    so it failed 14 s later than uninterrupted and its retry was due 14 s later. That is
    allowed; a retry due earlier, or any other difference, is not."""
    retry = {
        "kind": "ActivityRetryScheduled",
        "task_id": 5,
        "attempt": 1,
        "fire_at": "2030-01-01T00:17:04Z",
        "error": {"type": "Flaky", "message": "failed attempt 1"},
    }
    later = {**retry, "fire_at": "2030-01-01T00:17:18Z"}
    other_error = {**later, "error": {"type": "Flaky", "message": "failed attempt 2"}}
    completed = {"kind": "ActivityCompleted", "task_id": 5, "attempt": 2, "result": "r"}

    assert same_task([retry, completed], [later, completed])
    assert not same_task([later, completed], [retry, completed])  # due earlier when crashed
    assert not same_task([retry, completed], [other_error, completed])
    assert not same_task([retry, completed], [later, {**completed, "result": "s"}])
