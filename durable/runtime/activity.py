"""Running one activity attempt and turning its outcome into an inbox message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from durable.codec import ErrorInfo, decode_arguments, encode
from durable.errors import ConfigurationError
from durable.history import ActivityResult, utcnow
from durable.info import ActivityInfo, running_activity
from durable.replay import ActivityWork
from durable.workflow import Activity, get_activity


def resolve_activity(work: ActivityWork) -> Activity[..., Any]:
    """The code of the activity a work item names.

    Raises:
        ConfigurationError: no such activity is registered in this process.
    """
    if work.fn is not None:
        return work.fn
    found = get_activity(work.activity)
    if found is None:
        raise ConfigurationError(
            f"no activity named {work.activity!r} is registered in this process "
            "(is the module that defines it imported?)"
        )
    return found


def run_activity(work: ActivityWork, now: Callable[[], datetime] = utcnow) -> ActivityResult:
    """Run one attempt; any exception becomes a failed result, never escapes.

    That includes ``sys.exit()`` and other ``BaseException`` raised by the
    activity (only ``KeyboardInterrupt`` passes): the thread running it must
    live on to post the outcome. A result a store could not carry (not JSON,
    or nested deeper than ``durable.codec.MAX_NESTING``) is a failed attempt too.
    ``now`` stamps the result with the time it finished (the driver's clock).
    """
    info = ActivityInfo(work.instance_id, work.run, work.task_id, work.attempt, work.activity)
    try:
        act = resolve_activity(work)
        what = f"activity {act.name!r}"
        args, kwargs = decode_arguments(act.fn, work.input, what)
        with running_activity(info):
            value = act.fn(*args, **kwargs)
        result = encode(value, act.codec, what=f"result of {what}")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return failed_result(work, exc, now())
    return ActivityResult(
        task_id=work.task_id, run=work.run, attempt=work.attempt, result=result, received_at=now()
    )


def failed_result(work: ActivityWork, error: BaseException, at: datetime) -> ActivityResult:
    """The message recording that an attempt failed with ``error`` at ``at``."""
    return ActivityResult(
        task_id=work.task_id,
        run=work.run,
        attempt=work.attempt,
        error=ErrorInfo.from_exception(error),
        received_at=at,
    )
