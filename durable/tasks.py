"""Tasks: what a workflow yields.

A task is a plain description of work (run an activity, wait for a timer,
an event or a child workflow, or a group of tasks). Creating one does
nothing; the engine schedules it the first time it is yielded, on its own or
inside ``ctx.all`` / ``ctx.any``. Tasks are generic and iterable, so both
``user = yield ctx.call(send_email, user)`` and the typed
``user = yield from ctx.call(send_email, user)`` work and replay identically.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from durable.retry import RetryPolicy
    from durable.workflow import Activity, Workflow

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
TaskT = TypeVar("TaskT", bound="Task[Any]")

_PENDING = object()


class Task(Generic[T_co]):
    """A unit of work a workflow waits on; yield it to get its result.

    Attributes:
        name: the display name given with ``name=`` (or ``None``).
        task_id: the command position the engine gave it (``None`` until scheduled).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.task_id: int | None = None
        self._value: Any = _PENDING
        self._error: BaseException | None = None
        self._finished_order: int | None = None

    def __iter__(self) -> Generator[Task[T_co], Any, T_co]:
        result: T_co = yield self
        return result

    @property
    def done(self) -> bool:
        """Whether the task has finished, successfully or not."""
        return self._error is not None or self._value is not _PENDING

    @property
    def failed(self) -> bool:
        """Whether the task finished with an exception."""
        return self._error is not None

    @property
    def result(self) -> T_co:
        """The task's value; re-raises its exception if it failed.

        Raises:
            RuntimeError: if the task has not finished yet.
        """
        if self._error is not None:
            raise self._error
        if self._value is _PENDING:
            raise RuntimeError(f"{self.describe()} has not finished yet")
        value: T_co = self._value
        return value

    @property
    def exception(self) -> BaseException | None:
        """The exception the task failed with, or ``None``."""
        return self._error

    def describe(self) -> str:
        """A short human description, used in errors and progress views."""
        return type(self).__name__

    # The engine's side of a task. Not for workflow code.
    def _resolve(self, value: Any, order: int) -> None:
        self._value = value
        self._finished_order = order

    def _reject(self, error: BaseException, order: int) -> None:
        self._error = error
        self._finished_order = order

    def __repr__(self) -> str:
        state = "failed" if self.failed else "done" if self.done else "pending"
        return f"<{self.describe()} #{self.task_id} {state}>"


class ActivityTask(Task[T]):
    """Run an activity (``ctx.call``)."""

    def __init__(
        self,
        activity: Activity[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        retry: RetryPolicy | None,
        timeout: timedelta | None,
        name: str | None,
    ) -> None:
        super().__init__(name)
        self.activity = activity
        self.args = args
        self.kwargs = kwargs
        self.retry = retry
        self.timeout = timeout

    def describe(self) -> str:
        return f"activity {self.activity.name!r}"


class TimerTask(Task[None]):
    """A durable timer (``ctx.sleep`` / ``ctx.sleep_until``): exactly one of the two is set."""

    def __init__(
        self, *, delay: timedelta | None = None, until: datetime | None = None, name: str | None
    ) -> None:
        super().__init__(name)
        self.delay = delay
        self.until = until

    def describe(self) -> str:
        return f"timer ({self.delay})" if self.delay is not None else f"timer (until {self.until})"


class EventTask(Task[Any]):
    """Wait for an external event (``ctx.wait_for_event``)."""

    def __init__(self, event: str, timeout: timedelta | None, *, name: str | None) -> None:
        super().__init__(name)
        self.event = event
        self.timeout = timeout

    def describe(self) -> str:
        return f"event {self.event!r}"


class ChildTask(Task[T]):
    """Run a child workflow (``ctx.child``)."""

    def __init__(
        self,
        workflow: Workflow[Any, T],
        input: Any,
        instance_id: str | None,
        *,
        name: str | None,
    ) -> None:
        super().__init__(name)
        self.workflow = workflow
        self.input = input
        self.instance_id = instance_id

    def describe(self) -> str:
        return f"child workflow {self.workflow.name!r}"


class AllTask(Task[list[T]]):
    """All of several tasks (``ctx.all``): their results in order, or the first failure."""

    def __init__(self, tasks: Sequence[Task[T]], *, name: str | None) -> None:
        super().__init__(name)
        self.tasks = list(tasks)
        # Bookkeeping of the engine, so that checking a wide ``all`` after each result is O(1):
        self._done_prefix = 0
        """How many leading tasks are known to have succeeded."""
        self._failures_seen = -1
        """The engine's failure count when the tasks were last searched for a failure."""

    def describe(self) -> str:
        return f"all of {len(self.tasks)} tasks"


class AnyTask(Task[TaskT]):
    """The first of several tasks to finish (``ctx.any``), failed or not."""

    def __init__(self, tasks: Sequence[TaskT], *, name: str | None) -> None:
        super().__init__(name)
        self.tasks = list(tasks)

    def describe(self) -> str:
        return f"any of {len(self.tasks)} tasks"


class ContinueAsNew(BaseException):
    """Ends the current run; the instance restarts with ``input`` and a fresh history.

    ``ctx.continue_as_new(input)`` raises it, so ``return``, ``yield`` or a bare
    call all work. It derives from ``BaseException`` so that a workflow's
    ``except Exception`` does not swallow it.
    """

    def __init__(self, input: Any = None) -> None:
        super().__init__()
        self.input = input
