"""The Lambda handlers of the stack: orchestrator, activity, park, and the HTTP API.

All four live in one code package and share :mod:`durable.runtime.aws_config`
(environment, store, clients). The state machine (``infra/statemachine.asl.json``)
calls them::

    Orchestrate ── orchestrator_handler({instance_id, events, recover}) -> {next, activities, ...}
    RunActivities/Dispatch ── activity_handler({instance_id, run, task_id, attempt})
    Park ── park_handler({instance_id, token})

and API Gateway (REST, IAM auth) calls ``api_handler``. Logging, tracing and
metrics are aws-lambda-powertools': every log line carries ``instance_id``;
metrics go out as CloudWatch embedded metric format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from durable.api import Backend, build_api
from durable.decision import Decision
from durable.errors import InstanceNotFoundError
from durable.history import ActivityResult
from durable.runtime.aws_config import Services, services, start_execution
from durable.runtime.aws_loop import (
    ActivityRef,
    Observer,
    error_summary,
    orchestrate,
    run_referenced_attempt,
)
from durable.runtime.step import LiveRuns

__all__ = ["activity_handler", "api_handler", "orchestrator_handler", "park_handler"]

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
    """Advance one instance as far as it goes now; return the small decision for ``Route``."""
    instance_id = _instance_id(event)
    logger.append_keys(instance_id=instance_id)
    tracer.put_annotation("instance_id", instance_id)
    svc = services()
    recover = bool(event.get("recover", False))
    events = int(event.get("events", 0))
    if recover:
        logger.warning("recovering: dispatching every pending attempt again")
    tally = _Tally()
    try:
        decision = orchestrate(
            svc.store,
            instance_id,
            resolve=svc.resolve,
            clock=svc.clock,
            time_left=lambda: _time_left(context),
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
        )
    except InstanceNotFoundError:
        logger.error("instance does not exist (deleted?): ending its loop")
        metrics.add_metric(name="MissingInstances", unit=MetricUnit.Count, value=1)
        return {"next": "fail", "activities": [], "wait_seconds": 0, "events": 0, "recover": False}
    metrics.add_metric(name="Orchestrations", unit=MetricUnit.Count, value=1)
    tally.publish()
    payload = decision.as_payload()
    logger.info(
        "orchestrated",
        extra={
            "next": decision.next,
            "activities": len(decision.activities),
            "wait_seconds": decision.wait_seconds,
            "steps": decision.steps,
            "local_attempts": decision.local_attempts,
        },
    )
    return payload


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


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def activity_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Run one attempt and post its outcome; a duplicate delivery changes nothing recorded.

    With ``crash`` in the event (the invocation before died; Step Functions'
    error and cause) the attempt is recorded as failed instead of run.
    """
    ref = ActivityRef.parse(event)
    logger.append_keys(instance_id=ref.instance_id, task_id=ref.task_id, attempt=ref.attempt)
    tracer.put_annotation("instance_id", ref.instance_id)
    svc = services()
    crash = event.get("crash")
    result = run_referenced_attempt(
        svc.store,
        ref,
        svc.clock,
        limit=_time_left(context) - _ACTIVITY_TIME_MARGIN,
        crash=crash if isinstance(crash, dict) else None,
    )
    metrics.add_metric(name="ActivityAttempts", unit=MetricUnit.Count, value=1)
    if result is None:
        logger.info("attempt already has an outcome (or its instance is gone): nothing run")
        return {"status": "skipped"}
    if result.error is not None:
        metrics.add_metric(name="ActivityFailures", unit=MetricUnit.Count, value=1)
        logger.warning("activity attempt failed: %s", error_summary(result.error))
        return {"status": "failed"}
    return {"status": "completed"}


# ----------------------------------------------------------------------------- park


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def park_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Leave the task token for the next poster, or answer it now if mail is already waiting."""
    instance_id = _instance_id(event)
    token = event.get("token")
    if not isinstance(token, str) or not token:
        raise ValueError("park needs the task token in 'token'")
    logger.append_keys(instance_id=instance_id)
    svc = services()
    try:
        parked = svc.store.park(instance_id, token)
    except InstanceNotFoundError:
        parked = False
    metrics.add_metric(name="Parks", unit=MetricUnit.Count, value=1)
    if not parked:
        logger.info("inbox not empty: waking the loop at once")
        svc.wake(token)
    return {"parked": parked}


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
