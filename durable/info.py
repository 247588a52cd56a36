"""What a running activity can know about itself: ``durable.activity_info()``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from durable.errors import DurableError


@dataclass(frozen=True)
class ActivityInfo:
    """The activity attempt being run.

    Attributes:
        instance_id: the workflow instance that called the activity.
        run: the run of that instance (1, then +1 after every continue-as-new).
        task_id: the call's position among the commands of that run.
        attempt: 1 for the first attempt, then 2, 3, ... for retries.
        activity: the activity's registered name.
    """

    instance_id: str
    run: int
    task_id: int
    attempt: int
    activity: str

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this call, different for every other call.

        Pass it to payment providers, email services and the like so that an
        attempt run twice (activities run at least once) has its effect once.
        """
        return f"{self.instance_id}/{self.run}/{self.task_id}"


_current: ContextVar[ActivityInfo | None] = ContextVar("durable_activity", default=None)


def activity_info() -> ActivityInfo:
    """The attempt the calling activity is running as.

    Raises:
        DurableError: when called outside an activity run by `durable`.
    """
    info = _current.get()
    if info is None:
        raise DurableError("activity_info() is only available inside a running activity")
    return info


@contextmanager
def running_activity(info: ActivityInfo) -> Iterator[None]:
    """Make ``info`` what :func:`activity_info` returns while the block runs (drivers' use)."""
    token = _current.set(info)
    try:
        yield
    finally:
        _current.reset(token)
