"""The programming model: ``@workflow``, ``@activity`` and the workflow ``Context``.

A workflow is a generator function ``(ctx, input)``. It must be
deterministic: everything that touches the outside world (I/O, clocks,
randomness) goes through ``ctx``, so that replaying its history rebuilds the
same state. Activities are ordinary functions; they run at least once and
their result is recorded once.
"""

from __future__ import annotations

import inspect
import logging
import random as _random
import uuid as _uuid
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, NoReturn, ParamSpec, Protocol, TypeVar, overload

from durable.codec import Codec, return_annotation, type_hints
from durable.errors import ConfigurationError, UnknownWorkflowError
from durable.retry import RetryPolicy
from durable.tasks import (
    ActivityTask,
    AllTask,
    AnyTask,
    ChildTask,
    ContinueAsNew,
    EventTask,
    Task,
    TimerTask,
)

P = ParamSpec("P")
R = TypeVar("R")
I = TypeVar("I")  # noqa: E741 - the conventional name of a workflow's input type
T = TypeVar("T")
TaskT = TypeVar("TaskT", bound=Task[Any])

WorkflowResult = Generator[Any, Any, R]
"""Annotate a workflow ``-> WorkflowResult[User]`` to declare (and validate) its result type."""

_CODECS = ("json", "pickle")


def _check_codec(codec: str, owner: str) -> None:
    if codec not in _CODECS:
        raise ConfigurationError(f"{owner}: codec must be 'json' or 'pickle', got {codec!r}")


def _as_timedelta(value: timedelta | float | int | None, what: str) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise ConfigurationError(f"{what} must be a timedelta or seconds, got {value!r}")


# ----------------------------------------------------------------------------- activities


class Activity(Generic[P, R]):
    """An activity: an ordinary function the engine runs, retries and records.

    Calling the object calls the function directly (handy in unit tests);
    inside a workflow, ``yield ctx.call(activity, ...)`` runs it durably.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: timedelta | float | None = None,
        local: bool = False,
        codec: Codec = "json",
    ) -> None:
        if inspect.isgeneratorfunction(fn):
            raise ConfigurationError(
                f"@activity {fn.__qualname__} is a generator function; "
                "generators are workflows (use @workflow)"
            )
        _check_codec(codec, f"@activity {fn.__qualname__}")
        self.fn = fn
        self.name = name or fn.__name__
        self.retry = retry
        self.timeout = _as_timedelta(timeout, f"@activity {self.name} timeout")
        self.local = local
        self.codec: Codec = codec
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @property
    def result_type(self) -> Any:
        """The annotated return type (``None`` when not annotated)."""
        return return_annotation(self.fn)

    def __repr__(self) -> str:
        return f"<activity {self.name}>"


@overload
def activity(fn: Callable[P, R], /) -> Activity[P, R]: ...


@overload
def activity(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: timedelta | float | None = None,
    local: bool = False,
    codec: Codec = "json",
) -> Callable[[Callable[P, R]], Activity[P, R]]: ...


def activity(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: timedelta | float | None = None,
    local: bool = False,
    codec: Codec = "json",
) -> Activity[P, R] | Callable[[Callable[P, R]], Activity[P, R]]:
    """Declare an activity: ``@activity`` or ``@activity(name=..., retry=..., timeout=...)``.

    Args:
        name: the registered name (default: the function's name).
        retry: its retry policy (overrides the calling workflow's default).
        timeout: fail an attempt that runs longer (timedelta or seconds).
        local: run inside the orchestrator on AWS (no Step Functions transition).
        codec: ``"json"`` (default) or ``"pickle"`` for its arguments and result.
    """

    def decorate(f: Callable[P, R]) -> Activity[P, R]:
        act = Activity(f, name=name, retry=retry, timeout=timeout, local=local, codec=codec)
        _register(_ACTIVITIES, act.name, act, "activity")
        return act

    return decorate(fn) if fn is not None else decorate


def as_activity(fn: Callable[..., R] | Activity[..., R]) -> Activity[..., R]:
    """``fn`` as an :class:`Activity` (a plain function gets default settings)."""
    if isinstance(fn, Activity):
        return fn
    if isinstance(fn, Workflow):
        raise ConfigurationError(
            f"{fn.name} is a workflow; run it with ctx.child(...), not ctx.call(...)"
        )
    if not callable(fn):
        raise ConfigurationError(f"ctx.call needs an activity or function, got {fn!r}")
    existing = _ACTIVITIES.get(getattr(fn, "__name__", ""))
    if existing is not None and existing.fn is fn:
        return existing
    return Activity(fn)


# ----------------------------------------------------------------------------- workflows


class Workflow(Generic[I, R]):
    """A registered workflow: a generator function ``(ctx, input)`` and its settings."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        codec: Codec = "json",
    ) -> None:
        _check_codec(codec, f"@workflow {fn.__qualname__}")
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not 1 <= len(params) <= 2:
            raise ConfigurationError(
                f"@workflow {fn.__qualname__} must take (ctx) or (ctx, input), "
                f"it takes {len(params)} positional parameters"
            )
        self.fn = fn
        self.name = name or fn.__name__
        self.retry = retry
        self.codec: Codec = codec
        self.takes_input = len(params) == 2
        self.input_type: Any = type_hints(fn).get(params[1].name) if self.takes_input else None
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @property
    def result_type(self) -> Any:
        """The declared result type (``R`` of ``Generator[Y, S, R]``), or ``None``."""
        return return_annotation(self.fn)

    def __call__(self, ctx: Context, input: Any = None) -> Any:
        return self.fn(ctx, input) if self.takes_input else self.fn(ctx)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


@overload
def workflow(fn: Callable[..., Generator[Any, Any, R]], /) -> Workflow[Any, R]: ...


@overload
def workflow(fn: Callable[..., R], /) -> Workflow[Any, R]: ...


@overload
def workflow(
    *, name: str | None = None, retry: RetryPolicy | None = None, codec: Codec = "json"
) -> Callable[[Callable[..., Any]], Workflow[Any, Any]]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    codec: Codec = "json",
) -> Workflow[Any, Any] | Callable[[Callable[..., Any]], Workflow[Any, Any]]:
    """Declare a workflow: ``@workflow`` or ``@workflow(name=..., retry=..., codec=...)``.

    Args:
        name: the registered name (default: the function's name); instances record it.
        retry: the default retry policy of every activity the workflow calls.
        codec: ``"json"`` (default) or ``"pickle"`` for its input and result.
    """

    def decorate(f: Callable[..., Any]) -> Workflow[Any, Any]:
        wf: Workflow[Any, Any] = Workflow(f, name=name, retry=retry, codec=codec)
        _register(_WORKFLOWS, wf.name, wf, "workflow")
        return wf

    return decorate(fn) if fn is not None else decorate


# ----------------------------------------------------------------------------- registry

_WORKFLOWS: dict[str, Workflow[Any, Any]] = {}
_ACTIVITIES: dict[str, Activity[..., Any]] = {}


def _register(table: dict[str, Any], name: str, obj: Any, kind: str) -> None:
    old = table.get(name)
    if old is not None and _origin(old.fn) != _origin(obj.fn):
        raise ConfigurationError(
            f"two {kind}s are registered as {name!r}: {_origin(old.fn)} and {_origin(obj.fn)}; "
            f"give one of them another name with @{kind}(name=...)"
        )
    table[name] = obj  # re-importing the same module replaces its own definitions


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def get_workflow(name: str) -> Workflow[Any, Any]:
    """The workflow registered as ``name``.

    Raises:
        UnknownWorkflowError: if no workflow has that name.
    """
    try:
        return _WORKFLOWS[name]
    except KeyError:
        raise UnknownWorkflowError(name, list(_WORKFLOWS)) from None


def get_activity(name: str) -> Activity[..., Any] | None:
    """The activity registered as ``name``, or ``None``."""
    return _ACTIVITIES.get(name)


def registered_workflows() -> dict[str, Workflow[Any, Any]]:
    """A copy of the workflow registry, by name."""
    return dict(_WORKFLOWS)


# ----------------------------------------------------------------------------- context


class ExecutionHooks(Protocol):
    """What a :class:`Context` needs from the engine running the workflow."""

    @property
    def is_replaying(self) -> bool: ...

    def side_effect(self, effect: str) -> Any: ...

    def set_status(self, value: Any) -> None: ...

    def patched(self, patch_id: str) -> bool: ...


class _ReplaySafeLogger(logging.LoggerAdapter[logging.Logger]):
    """Drops records while the workflow is replaying history, so each line is logged once."""

    def __init__(self, logger: logging.Logger, hooks: ExecutionHooks, instance_id: str) -> None:
        super().__init__(logger, {"instance_id": instance_id})
        self._hooks = hooks

    def isEnabledFor(self, level: int) -> bool:
        return not self._hooks.is_replaying and super().isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['instance_id']}] {msg}", kwargs  # type: ignore[index]


class Context:
    """What a workflow uses to do anything with the outside world.

    Every method returns a task to ``yield`` (or, for ``now``, ``uuid``,
    ``random``, ``set_status``, ``patched``, acts at once, deterministically
    on replay). Every call takes an optional ``name=`` shown in the history,
    the CLI and the status views.
    """

    def __init__(
        self,
        hooks: ExecutionHooks,
        *,
        instance_id: str,
        input: Any,
        workflow: Workflow[Any, Any],
    ) -> None:
        self._hooks = hooks
        self._rng: _random.Random | None = None
        self.instance_id = instance_id
        """The id of the running instance (stable across continue-as-new)."""
        self.input = input
        """The input of the current run."""
        self.workflow = workflow
        self.logger: logging.LoggerAdapter[logging.Logger] = _ReplaySafeLogger(
            logging.getLogger(f"durable.workflow.{workflow.name}"), hooks, instance_id
        )
        """A logger that stays silent while the workflow replays."""

    @property
    def is_replaying(self) -> bool:
        """True while the workflow re-runs recorded history, False once it makes new progress."""
        return self._hooks.is_replaying

    def call(
        self,
        fn: Callable[..., R],
        /,
        *args: Any,
        retry: RetryPolicy | None = None,
        timeout: timedelta | float | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Task[R]:
        """Run activity ``fn(*args, **kwargs)``; yield the task for its result.

        ``retry``, ``timeout`` and ``name`` belong to the call and are not passed on.
        The activity's exception is re-raised at the ``yield`` when attempts run out.
        """
        return ActivityTask(
            as_activity(fn),
            args,
            kwargs,
            retry=retry,
            timeout=_as_timedelta(timeout, "ctx.call timeout"),
            name=name,
        )

    def sleep(self, duration: timedelta | float, *, name: str | None = None) -> Task[None]:
        """A durable timer that fires ``duration`` (timedelta or seconds) from now."""
        delay = _as_timedelta(duration, "ctx.sleep duration")
        assert delay is not None
        if delay < timedelta(0):
            raise ValueError(f"ctx.sleep duration must not be negative, got {delay}")
        return TimerTask(delay=delay, name=name)

    def sleep_until(self, when: datetime, *, name: str | None = None) -> Task[None]:
        """A durable timer that fires at ``when`` (a timezone-aware datetime)."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ValueError(f"ctx.sleep_until needs a timezone-aware datetime, got {when!r}")
        return TimerTask(until=when, name=name)

    def wait_for_event(
        self, event: str, timeout: timedelta | float | None = None, *, name: str | None = None
    ) -> Task[Any]:
        """Wait for the external event ``event``; its data is the result.

        Events raised before the workflow waits are buffered, one per wait, in
        arrival order. With ``timeout``, the ``yield`` raises ``TimeoutError``
        when no event came in time.
        """
        if not isinstance(event, str) or not event:
            raise ValueError(f"ctx.wait_for_event needs a non-empty event name, got {event!r}")
        return EventTask(event, _as_timedelta(timeout, "ctx.wait_for_event timeout"), name=name)

    def all(self, tasks: Sequence[Task[T]], *, name: str | None = None) -> Task[list[T]]:
        """Wait for every task; results in the order given, or the first failure raised."""
        return AllTask(_check_tasks(tasks, "ctx.all"), name=name)

    def any(self, tasks: Sequence[TaskT], *, name: str | None = None) -> Task[TaskT]:
        """Wait for the first task to finish (failed or not) and return that task object."""
        checked = _check_tasks(tasks, "ctx.any")
        if not checked:
            raise ValueError("ctx.any needs at least one task")
        return AnyTask(checked, name=name)

    def child(
        self,
        workflow_fn: Workflow[Any, R],
        input: Any = None,
        instance_id: str | None = None,
        *,
        name: str | None = None,
    ) -> Task[R]:
        """Run ``workflow_fn`` as a child instance; its result (or exception) is the task's."""
        if not isinstance(workflow_fn, Workflow):
            raise ConfigurationError(f"ctx.child needs a @workflow, got {workflow_fn!r}")
        return ChildTask(workflow_fn, input, instance_id, name=name)

    def continue_as_new(self, input: Any = None) -> NoReturn:
        """End this run and restart the instance with ``input`` and a fresh history.

        Raises :class:`~durable.tasks.ContinueAsNew` (a ``BaseException``), so
        ``return ctx.continue_as_new(x)``, ``yield ctx.continue_as_new(x)`` and a
        bare call all work, and type-check in a workflow with a declared result.
        """
        raise ContinueAsNew(input)

    def now(self) -> datetime:
        """The current time, recorded so that replay sees the same value."""
        value = self._hooks.side_effect("now")
        return datetime.fromisoformat(value)

    def uuid(self) -> _uuid.UUID:
        """A random UUID, recorded so that replay sees the same value."""
        return _uuid.UUID(self._hooks.side_effect("uuid"))

    def random(self) -> _random.Random:
        """A ``random.Random`` seeded once per run (recorded), so replay draws the same numbers."""
        if self._rng is None:
            self._rng = _random.Random(self._hooks.side_effect("random"))
        return self._rng

    def set_status(self, value: Any) -> None:
        """Publish a custom status (any JSON value), shown by the status API and CLI."""
        self._hooks.set_status(value)

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new code path of change ``patch_id``.

        True for runs that reach this point with the new code, False for
        runs that passed it under the old code (their history has no marker).
        """
        return self._hooks.patched(patch_id)


def _check_tasks(tasks: Sequence[Any], what: str) -> list[Any]:
    items = list(tasks)
    for i, task in enumerate(items):
        if not isinstance(task, Task):
            raise TypeError(f"{what}: item {i} is {task!r}, not a task (from ctx.call, ...)")
    return items
