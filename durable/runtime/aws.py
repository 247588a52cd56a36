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

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from durable.codec import encode
from durable.decision import Decision
from durable.errors import (
    DurableError,
    InstanceExistsError,
    InstanceNotFoundError,
    SerializationError,
    UnknownWorkflowError,
)
from durable.history import ActivityResult, EventMessage
from durable.runtime.aws_config import Services, services, start_execution
from durable.runtime.aws_loop import (
    ActivityRef,
    Observer,
    error_summary,
    orchestrate,
    run_referenced_attempt,
)
from durable.runtime.start import check_instance_id, create_instance, encode_input

__all__ = ["activity_handler", "api_handler", "orchestrator_handler", "park_handler"]

logger = Logger(service="durable")
tracer = Tracer(service="durable")
metrics = Metrics(namespace="durable", service="durable")

_ACTIVITY_TIME_MARGIN = 5.0  # seconds kept back from the Lambda's time to post the outcome


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

app = APIGatewayRestResolver()


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _http_error(exc: _HttpError) -> Response[str]:
    return _json(exc.status, {"error": exc.message})


def _no_route(exc: NotFoundError) -> Response[str]:
    return _json(404, {"error": "no such route"})


app.exception_handler(_HttpError)(_http_error)
app.exception_handler(NotFoundError)(_no_route)


def _json(status: int, body: Any) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body))


def _body() -> dict[str, Any]:
    raw = app.current_event.body
    if raw in (None, ""):
        return {}
    try:
        parsed = json.loads(app.current_event.decoded_body or "")
    except ValueError as exc:
        raise _HttpError(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise _HttpError(400, "the request body must be a JSON object")
    return parsed


@app.post("/workflows/<name>")
def _start(name: str) -> Response[str]:
    svc = services()
    name = unquote(name)
    body = _body()
    try:
        workflow = svc.resolve(name)
    except UnknownWorkflowError as exc:
        raise _HttpError(404, str(exc)) from None
    instance_id = body.get("instance_id")
    if instance_id is not None and not isinstance(instance_id, str):
        raise _HttpError(400, "instance_id must be a string")
    try:
        if instance_id is not None:
            check_instance_id(instance_id)
        payload = encode_input(workflow, body.get("input"))
        iid, created = create_instance(svc.store, workflow, payload, instance_id, svc.clock.now())
    except (ValueError, SerializationError) as exc:
        raise _HttpError(400, f"input: {exc}") from None
    except InstanceExistsError as exc:
        raise _HttpError(409, str(exc)) from None
    logger.append_keys(instance_id=iid)
    start_execution(svc.sfn, svc.settings.require_state_machine(), iid)
    logger.info("instance %s", "started" if created else "already existed")
    metrics.add_metric(name="InstancesStarted", unit=MetricUnit.Count, value=int(created))
    return _json(202, {"instance_id": iid, "status_url": _status_url(iid)})


@app.get("/instances/<instance_id>")
def _status(instance_id: str) -> Response[str]:
    logger.append_keys(instance_id=unquote(instance_id))
    header = services().store.get(unquote(instance_id))
    if header is None:
        raise _HttpError(404, f"no workflow instance with id {unquote(instance_id)!r}")
    return _json(200, header.model_dump(mode="json"))


@app.post("/instances/<instance_id>/events/<event_name>")
def _raise_event(instance_id: str, event_name: str) -> Response[str]:
    svc = services()
    iid, name = unquote(instance_id), unquote(event_name)
    logger.append_keys(instance_id=iid)
    raw = app.current_event.body
    try:
        data = None if raw in (None, "") else json.loads(app.current_event.decoded_body or "")
    except ValueError as exc:
        raise _HttpError(400, f"the event data is not JSON: {exc}") from None
    try:
        payload = encode(data, what=f"data of event {name!r}")
    except SerializationError as exc:
        raise _HttpError(400, str(exc)) from None
    message = EventMessage(event=name, data=payload, received_at=svc.clock.now())
    try:
        accepted = svc.store.post(iid, message)
    except InstanceNotFoundError as exc:
        raise _HttpError(404, str(exc)) from None
    if not accepted:
        raise _HttpError(409, f"instance {iid!r} has already ended")
    logger.info("event %r delivered", name)
    metrics.add_metric(name="EventsRaised", unit=MetricUnit.Count, value=1)
    return _json(202, {"instance_id": iid, "event": name})


def _status_url(instance_id: str) -> str:
    path = f"/instances/{quote(instance_id, safe='')}"
    ctx = app.current_event.request_context
    domain, stage = ctx.domain_name, ctx.stage
    return f"https://{domain}/{stage}{path}" if domain and stage else path


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)  # statuses can exceed X-Ray's 64 KB
@logger.inject_lambda_context(clear_state=True)
def api_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The HTTP API behind API Gateway (REST, proxy integration)."""
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    try:
        return app.resolve(event, context)
    except DurableError as exc:  # configuration problems: say what is wrong
        logger.exception("request failed")
        return {
            "statusCode": 500,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"error": str(exc)}),
        }
