"""Every error `durable` raises, under one root.

::

    DurableError
     ├── ConfigurationError        bad decorator use, duplicate registration, bad store URL
     ├── UnknownWorkflowError      a name with no registered workflow
     ├── InstanceNotFoundError     an instance id the store does not know
     ├── InstanceExistsError       start with an id that is taken by other input
     ├── InstanceFinishedError     an event or command sent to a finished instance
     ├── ConflictError             a commit lost the optimistic-concurrency race
     ├── NonDeterminismError       code and recorded history disagree
     ├── InvalidHistoryError       a malformed history (not a code change)
     ├── SerializationError        a value the chosen codec cannot carry
     ├── ActivityError             an activity failure whose exception cannot be rebuilt
     └── WorkflowFailed            ``Runtime.wait`` on an instance that did not complete

    BaseException
     └── Cancelled                 thrown into a workflow at its current ``yield``

``Cancelled`` derives from ``BaseException`` so that a workflow's
``except Exception`` does not swallow a cancellation by accident.
"""

from __future__ import annotations

from typing import Any


class DurableError(Exception):
    """Root of every error raised by `durable`."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other __init__ arguments than the message pickle would
        # pass back; rebuild them from their args and attributes instead, so that
        # a recorded error (e.g. NonDeterminismError of a STUCK instance) comes
        # back as its own type.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[DurableError], args: tuple[Any, ...], state: dict[str, Any]) -> DurableError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(DurableError):
    """A decorator, registry or store was set up wrongly."""


class UnknownWorkflowError(DurableError):
    """No workflow is registered under the given name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; registered: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown workflow {name!r}{hint}")
        self.name = name


class InstanceNotFoundError(DurableError):
    """The store has no instance with the given id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no workflow instance with id {instance_id!r}")
        self.instance_id = instance_id


class InstanceExistsError(DurableError):
    """An instance id is already used by an instance with other input or workflow."""

    def __init__(self, instance_id: str, reason: str) -> None:
        super().__init__(f"instance {instance_id!r} already exists {reason}")
        self.instance_id = instance_id


class InstanceFinishedError(DurableError):
    """The instance has already ended; it accepts no more events or commands."""

    def __init__(self, instance_id: str, status: str) -> None:
        super().__init__(f"instance {instance_id!r} has already ended ({status})")
        self.instance_id = instance_id
        self.status = status


class ConflictError(DurableError):
    """A commit was refused because another writer advanced the instance first."""

    def __init__(self, instance_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"instance {instance_id!r} is at version {actual}, not {expected}: "
            "another worker committed first"
        )
        self.instance_id = instance_id
        self.expected = expected
        self.actual = actual


class NonDeterminismError(DurableError):
    """The workflow code yielded something other than what its history recorded.

    Attributes:
        position: the command position (task id) where code and history part.
        recorded: what the history recorded there (``None`` if nothing).
        yielded: what the code yielded there (``None`` if nothing).
    """

    def __init__(
        self, instance_id: str, position: int, recorded: str | None, yielded: str | None
    ) -> None:
        rec = recorded or "nothing"
        got = yielded or "nothing"
        super().__init__(
            f"non-determinism in instance {instance_id!r} at command #{position}: "
            f"history recorded {rec}, but the code yielded {got}"
        )
        self.instance_id = instance_id
        self.position = position
        self.recorded = recorded
        self.yielded = yielded


class InvalidHistoryError(DurableError):
    """A history is malformed (no WorkflowStarted first, events after the end, ...)."""


class SerializationError(DurableError):
    """A value cannot be encoded or decoded with the chosen codec."""


class ActivityError(DurableError):
    """An activity failed and its original exception could not be rebuilt.

    Attributes:
        type: the qualified name of the original exception type.
        message: ``str()`` of the original exception.
        traceback: the formatted traceback recorded where it was raised.
    """

    def __init__(self, type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback


class WorkflowFailed(DurableError):
    """The awaited instance ended FAILED, CANCELED or TERMINATED.

    Attributes:
        instance_id: the instance.
        status: its final status (``"FAILED"``, ``"CANCELED"``, ``"TERMINATED"``).
        cause: the original exception, rebuilt where possible.
    """

    def __init__(self, instance_id: str, status: str, cause: BaseException | None) -> None:
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"instance {instance_id!r} ended {status}{detail}")
        self.instance_id = instance_id
        self.status = status
        self.cause = cause


class Cancelled(BaseException):
    """Thrown into a workflow at its current ``yield`` when the instance is cancelled.

    A workflow may catch it to clean up (and keep yielding activities); if it
    leaves the workflow, the instance ends CANCELED.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
