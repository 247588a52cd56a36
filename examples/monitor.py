"""Poll until a condition holds, sleeping between checks; keep the history short.

A monitor can run for weeks, and every poll adds events to its history. So
after ``CHECKS_PER_RUN`` polls the workflow calls ``ctx.continue_as_new``
with what it has learned: the instance keeps its id, starts a fresh history,
and ``Runtime.wait`` (or ``durable run``) returns the result of the last run
of the chain.

Run it (the simulated job is done at the 7th check, in the third run):
    durable run examples/monitor.py:monitor_job --time-skipping \\
        --input '{"job_id": "job-42", "done_after_checks": 7}'
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from durable import Context, WorkflowResult, activity, workflow

CHECKS_PER_RUN = 3
"""Polls per run before continuing as new."""


class Watch(BaseModel):
    job_id: str
    done_after_checks: int = 5
    """For the demo: the job reports done at this check."""
    interval_minutes: float = 10
    checks: int = 0
    """Checks done by earlier runs (carried across continue-as-new)."""
    runs: int = 1


class JobState(BaseModel):
    job_id: str
    done: bool
    progress: float


class MonitorResult(BaseModel):
    job_id: str
    checks: int
    runs: int


@activity(name="monitor.check_job")
def check_job(job_id: str, check: int, done_after: int) -> JobState:
    """Ask the outside world how the job is doing (simulated from the check number)."""
    return JobState(job_id=job_id, done=check >= done_after, progress=min(1.0, check / done_after))


@workflow
def monitor_job(ctx: Context, watch: Watch) -> WorkflowResult[MonitorResult]:
    """Check the job every ``interval_minutes`` until it is done."""
    checks = watch.checks
    for _ in range(CHECKS_PER_RUN):
        checks += 1
        state = yield from ctx.call(
            check_job, watch.job_id, checks, watch.done_after_checks, name=f"Check #{checks}"
        )
        ctx.set_status({"checks": checks, "progress": state.progress})
        if state.done:
            return MonitorResult(job_id=watch.job_id, checks=checks, runs=watch.runs)
        yield ctx.sleep(timedelta(minutes=watch.interval_minutes), name="Wait before next check")
    # Start over with a fresh history, carrying the count forward.
    next_watch = watch.model_copy(update={"checks": checks, "runs": watch.runs + 1})
    return ctx.continue_as_new(next_watch)
