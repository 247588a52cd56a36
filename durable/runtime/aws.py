"""The Lambda handlers of the stack: orchestrator, activity, and the HTTP API.

All three live in one code package and share :mod:`durable.runtime.aws_config`
(environment, store, clients). The state machine (``infra/statemachine.asl.json``)
has one working state::

    Orchestrate ── orchestrator_handler({instance_id, token, entered, timeout, events, recover})

The orchestrator answers its own task token (go on, or sleep in the Sleep
state), fails it with a ``durable.*`` error to end the loop, or parks it on
the instance for whoever posts next. It runs activities itself: local ones
in-process, the others by invoking ``activity_handler`` (waiting briefly, or
asynchronously). API Gateway (REST, IAM auth) calls ``api_handler``. Logging,
tracing and metrics are aws-lambda-powertools': every log line carries
``instance_id``; metrics go out as CloudWatch embedded metric format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from durable.api import Backend, build_api
from durable.decision import Decision
from durable.errors import InstanceNotFoundError
from durable.history import ActivityResult, message_to_json
from durable.runtime.aws_config import Services, services, start_execution, wake_handle
from durable.runtime.aws_dispatch import REPLY_MARGIN_SECONDS
from durable.runtime.aws_loop import (
    ActivityRef,
    LoopDecision,
    Observer,
    attempt_from_carried,
    error_summary,
    orchestrate,
    orchestrate_and_answer,
    run_referenced_attempt,
)
from durable.runtime.step import LiveRuns

__all__ = ["activity_handler", "api_handler", "orchestrator_handler"]

logger = Logger(service="durable")
tracer = Tracer(service="durable")
metrics = Metrics(namespace="durable", service="durable")

_ACTIVITY_TIME_MARGIN = 5.0  # seconds kept back from the Lambda's time to post the outcome

_live_runs = LiveRuns(capacity=100)
"""Workflow generators a warm orchestrator keeps between invocations (a sticky cache)."""


def _time_left(context: LambdaContext) -> float:
    return float(context.get_remaining_time_in_millis()) / 1000.0


# ----------------------------------------------------------------------------- orchestrator


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def orchestrator_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Advance one instance as far as it goes now, then answer the task token.

    The event is the Orchestrate task's payload: ``instance_id``, ``token``,
    ``entered`` and ``timeout`` (when the task times out), ``started`` (when
    the execution started), ``events`` and ``recover``. What the returned summary says has already been done; its
    ``answers`` are what :func:`~durable.runtime.aws_loop.answer_task` did, in
    order (more than one when mail came in while parking).
    """
    instance_id = _instance_id(event)
    token = event.get("token")
    if not isinstance(token, str) or not token:
        raise ValueError("the orchestrator needs the task token in 'token'")
    logger.append_keys(instance_id=instance_id)
    tracer.put_annotation("instance_id", instance_id)
    svc = services()
    recover = bool(event.get("recover", False))
    events = int(event.get("events", 0))
    expiry = _task_expiry(event)
    started = _instant(event.get("started"))  # the execution's start: it hands over by age
    if recover:
        logger.warning("recovering: dispatching every pending attempt again")

    def time_left() -> float:
        left = _time_left(context)
        return left if expiry is None else min(left, expiry - time.time())

    tally = _Tally()
    answers = _TaskAnswers(svc, instance_id, token, expiry)
    dispatcher = svc.dispatcher if svc.settings.inline_seconds > 0 else None

    def decide(recover: bool, events: int) -> LoopDecision:
        try:
            return orchestrate(
                svc.store,
                instance_id,
                resolve=svc.resolve,
                clock=svc.clock,
                time_left=time_left,
                recover=recover,
                events=events,
                hand_over_events=svc.settings.hand_over_events,
                lost_after=svc.settings.activity_timeout + 60,
                observer=Observer(
                    on_step=tally.step,
                    on_local_attempt=tally.local_attempt,
                    start_children=lambda ids: _start_children(svc, ids),
                ),
                live_runs=_live_runs,
                dispatcher=dispatcher,
                inline_seconds=svc.settings.inline_seconds,
                started=started,
            )
        except InstanceNotFoundError:
            logger.error("instance does not exist (deleted?): ending its loop")
            metrics.add_metric(name="MissingInstances", unit=MetricUnit.Count, value=1)
            raise

    decision, done_all = orchestrate_and_answer(
        decide,
        answers,
        recover=recover,
        events=events,
        time_left=time_left,
        on_answer=tally.publish_decision,
    )
    metrics.add_metric(name="Orchestrations", unit=MetricUnit.Count, value=1)
    tally.publish()
    return {**decision.as_payload(), "answers": done_all}


class _TaskAnswers:
    """How the orchestrator answers its Orchestrate task (``TaskAnswers`` of aws_loop)."""

    def __init__(self, svc: Services, instance_id: str, token: str, expiry: float | None) -> None:
        self.svc, self.instance_id, self.token, self.expiry = svc, instance_id, token, expiry

    def succeed(self, output: dict[str, Any]) -> None:
        try:
            self.svc.sfn.send_task_success(taskToken=self.token, output=json.dumps(output))
        except (self.svc.sfn.exceptions.TaskTimedOut, self.svc.sfn.exceptions.InvalidToken):
            logger.info("the task was answered or timed out already: the loop has moved on")

    def fail(self, error: str, cause: str) -> None:
        try:
            self.svc.sfn.send_task_failure(taskToken=self.token, error=error, cause=cause)
        except (self.svc.sfn.exceptions.TaskTimedOut, self.svc.sfn.exceptions.InvalidToken):
            logger.info("the task was answered or timed out already: the loop has moved on")

    def start(self, refs: Sequence[ActivityRef]) -> None:
        self.svc.dispatcher.start(refs)
        metrics.add_metric(name="ActivitiesStarted", unit=MetricUnit.Count, value=len(refs))

    def park(self, output: dict[str, Any]) -> bool:
        handle = wake_handle(self.token, output, deadline=self.expiry)
        metrics.add_metric(name="Parks", unit=MetricUnit.Count, value=1)
        return self.svc.store.park(self.instance_id, handle)

    def seconds_left(self) -> float | None:
        return None if self.expiry is None else self.expiry - time.time()


def _task_expiry(event: dict[str, Any]) -> float | None:
    """When the Orchestrate task times out (epoch seconds), from its ``entered`` and ``timeout``."""
    entered, timeout = _instant(event.get("entered")), event.get("timeout")
    if entered is None or not isinstance(timeout, int | float):
        return None
    return entered.timestamp() + float(timeout)


def _instant(value: Any) -> datetime | None:
    """A Step Functions timestamp (``2026-12-05T10:00:00.123Z``), or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class _Tally:
    """Per-invocation totals, published as one value per metric (EMF caps values per metric)."""

    def __init__(self) -> None:
        self.steps = 0
        self.step_ms = 0.0
        self.local_attempts = 0
        self.failures = 0

    def step(self, decision: Decision, step_ms: float) -> None:
        self.steps += 1
        self.step_ms += step_ms
        if decision.error is not None:
            logger.warning(
                "instance is %s: %s", decision.status.value, error_summary(decision.error)
            )

    def local_attempt(self, result: ActivityResult) -> None:
        self.local_attempts += 1
        if result.error is not None:
            self.failures += 1
            logger.info(
                "local activity attempt failed: %s",
                error_summary(result.error),
                extra={"task_id": result.task_id, "attempt": result.attempt},
            )

    def publish_decision(self, decision: LoopDecision, done: str) -> None:
        logger.info(
            "orchestrated",
            extra={
                "next": decision.next,
                "answer": done,
                "activities_started": len(decision.activities),
                "wait_seconds": decision.wait_seconds,
                "steps": decision.steps,
                "local_attempts": decision.local_attempts,
            },
        )

    def publish(self) -> None:
        metrics.add_metric(name="Steps", unit=MetricUnit.Count, value=self.steps)
        # A step is load + replay + commit: what replaying costs, store round trips included.
        metrics.add_metric(
            name="StepMilliseconds", unit=MetricUnit.Milliseconds, value=self.step_ms
        )
        metrics.add_metric(
            name="LocalActivityAttempts", unit=MetricUnit.Count, value=self.local_attempts
        )
        metrics.add_metric(name="ActivityFailures", unit=MetricUnit.Count, value=self.failures)


def _start_children(svc: Services, child_ids: Sequence[str]) -> None:
    arn = svc.settings.require_state_machine()
    for child_id in child_ids:
        started = start_execution(svc.sfn, arn, child_id)
        logger.info(
            "child loop %s",
            "started" if started else "already running",
            extra={"child_id": child_id},
        )


# ----------------------------------------------------------------------------- activity

_REPLY_LIMIT_BYTES = 5 * 1024 * 1024  # a synchronous Lambda response holds 6 MB


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def activity_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Run one attempt and record its outcome; a duplicate delivery changes nothing recorded.

    With ``reply_by`` in the event (epoch seconds: the orchestrator is waiting)
    an attempt that finishes before it answers with its ``outcome`` instead of
    posting it; such an event may carry the attempt itself (``work``: activity,
    input, timeout), sparing a read of the history. With ``crash`` (the invocation before died: its error and
    cause) the attempt is recorded as failed instead of run.
    """
    ref = ActivityRef.parse(event)
    logger.append_keys(instance_id=ref.instance_id, task_id=ref.task_id, attempt=ref.attempt)
    tracer.put_annotation("instance_id", ref.instance_id)
    svc = services()
    crash = event.get("crash")
    raw_reply_by = event.get("reply_by")
    reply_by: float | None = None
    if isinstance(raw_reply_by, int | float) and not isinstance(raw_reply_by, bool):
        reply_by = float(raw_reply_by)
    waited_for = reply_by is not None
    carried = event.get("work")
    result = run_referenced_attempt(
        svc.store,
        ref,
        svc.clock,
        limit=_time_left(context) - _ACTIVITY_TIME_MARGIN,
        crash=crash if isinstance(crash, dict) else None,
        post=not waited_for,
        work=attempt_from_carried(ref, carried) if waited_for and carried is not None else None,
    )
    metrics.add_metric(name="ActivityAttempts", unit=MetricUnit.Count, value=1)
    if result is None:
        logger.info("attempt already has an outcome (or its instance is gone): nothing run")
        return {"status": "skipped"}
    status = "completed"
    if result.error is not None:
        status = "failed"
        metrics.add_metric(name="ActivityFailures", unit=MetricUnit.Count, value=1)
        logger.warning("activity attempt failed: %s", error_summary(result.error))
    if waited_for:
        outcome = message_to_json(result)
        if (
            reply_by is not None
            and time.time() < reply_by - REPLY_MARGIN_SECONDS
            and (len(outcome) < _REPLY_LIMIT_BYTES)
        ):
            return {"status": status, "outcome": outcome}
        svc.store.post(ref.instance_id, result)  # the orchestrator stopped waiting
    return {"status": status}


def _instance_id(event: dict[str, Any]) -> str:
    value = event.get("instance_id")
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an 'instance_id' in the event, got {event!r}")
    return value


# ----------------------------------------------------------------------------- HTTP API


def _backend() -> Backend:
    svc = services()
    return Backend(store=svc.store, now=svc.clock.now, workflows=svc.workflows)


def _started(instance_id: str, created: bool) -> None:
    logger.append_keys(instance_id=instance_id)
    svc = services()
    start_execution(svc.sfn, svc.settings.require_state_machine(), instance_id)
    logger.info("instance %s", "started" if created else "already existed")
    metrics.add_metric(name="InstancesStarted", unit=MetricUnit.Count, value=int(created))


app = build_api(_backend, on_start=_started, max_wait=20.0, poll_interval=0.5)
"""The API of :mod:`durable.api` with the loop started on every start (idempotently)."""


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)  # statuses can exceed X-Ray's 64 KB
@logger.inject_lambda_context(clear_state=True)
def api_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The HTTP API behind API Gateway (REST, proxy integration)."""
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    return app.resolve(event, context)
