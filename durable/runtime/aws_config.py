"""What the Lambda handlers share: settings from the environment, the store, the clients.

Every handler of the stack reads the same environment variables:

=====================  ==================================================================
``TABLE_NAME``         the DynamoDB table of the store
``BUCKET``             the S3 bucket for payloads over the store's item threshold
``STATE_MACHINE_ARN``  the loop's state machine (API: start; orchestrator: children)
``DURABLE_MODULES``    comma-separated modules or ``.py`` files defining the workflows
                       (empty: the ``modules`` of ``durable_registry.json`` at the bundle root,
                       written by ``durable synth``/``deploy``)
``HAND_OVER_EVENTS``   orchestrator: the execution budget at which the loop hands over
``ACTIVITY_TIMEOUT``   orchestrator: the activity function's timeout in seconds
``ACTIVITY_FUNCTION``  orchestrator: the activity function it invokes
``INLINE_SECONDS``     orchestrator: how long it waits for activities it invoked (0: never
                       waits, every activity round parks the loop)
=====================  ==================================================================

:func:`services` builds the store and clients once per warm Lambda container
(once per distinct environment, so tests can run several stacks in one
process). :func:`configure` replaces the parts a test controls: the store
factory (a stand-in store) and the clock (virtual time for skipped waits).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import boto3
from botocore.config import Config

from durable.errors import ConfigurationError
from durable.loader import load_modules
from durable.runtime.clock import Clock, SystemClock
from durable.store.base import HistoryStore

if TYPE_CHECKING:
    from durable.runtime.aws_dispatch import LambdaDispatcher
from durable.workflow import Workflow, get_workflow

Waker = Callable[[str], None]
"""Answers a parked loop's task token (``SendTaskSuccess``)."""


@runtime_checkable
class ParkingStore(HistoryStore, Protocol):
    """A store that keeps a parked loop's task token (see the wake-up protocol in DESIGN.md)."""

    def park(self, instance_id: str, token: str) -> bool:
        """Store ``token`` on the instance only if its inbox is empty; True if stored.

        Whoever posts to the inbox afterwards takes the token and wakes the loop.
        """
        ...


StoreFactory = Callable[["Settings", Waker], ParkingStore]


@dataclass(frozen=True)
class Settings:
    """The handlers' configuration, read from the environment."""

    table_name: str | None
    bucket: str | None
    state_machine_arn: str | None
    modules: tuple[str, ...]
    hand_over_events: int = 20_000
    activity_timeout: int = 900
    activity_function: str | None = None
    inline_seconds: float = 3.0

    @classmethod
    def from_env(cls) -> Settings:
        modules = os.environ.get("DURABLE_MODULES", "")
        listed = tuple(m.strip() for m in modules.split(",") if m.strip())
        return cls(
            table_name=os.environ.get("TABLE_NAME") or None,
            bucket=os.environ.get("BUCKET") or None,
            state_machine_arn=os.environ.get("STATE_MACHINE_ARN") or None,
            modules=listed or registry_modules(),
            hand_over_events=_int_env("HAND_OVER_EVENTS", 20_000),
            activity_timeout=_int_env("ACTIVITY_TIMEOUT", 900),
            activity_function=os.environ.get("ACTIVITY_FUNCTION") or None,
            inline_seconds=_float_env("INLINE_SECONDS", 3.0),
        )

    def require_state_machine(self) -> str:
        if not self.state_machine_arn:
            raise ConfigurationError("STATE_MACHINE_ARN is not set for this function")
        return self.state_machine_arn


REGISTRY = Path(__file__).resolve().parents[2] / "durable_registry.json"
"""The bundle's registry: the bundle root holds it next to the ``durable`` package."""


def registry_modules(path: Path = REGISTRY) -> tuple[str, ...]:
    """The workflow modules the bundle's registry lists (none outside a bundle)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the workflow registry {path}: {exc}") from None
    modules = data.get("modules") if isinstance(data, dict) else None
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigurationError(f"the workflow registry {path} has no list of modules")
    return tuple(modules)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise ConfigurationError(f"{name} must be a number of seconds from 0 to 60, got {raw!r}")
    return value


def dynamodb_store(settings: Settings, waker: Waker) -> ParkingStore:
    """The production store: DynamoDB (``TABLE_NAME``), large payloads in S3 (``BUCKET``)."""
    from durable.store.dynamodb import DynamoDBStore

    if not settings.table_name:
        raise ConfigurationError("TABLE_NAME is not set for this function")
    store: ParkingStore = DynamoDBStore(
        settings.table_name,
        client=boto3.client("dynamodb"),
        s3_client=boto3.client("s3") if settings.bucket else None,
        bucket=settings.bucket,
        waker=waker,
    )
    return store


@dataclass
class Services:
    """The store, clock and Step Functions client one warm container uses."""

    settings: Settings
    store: ParkingStore
    clock: Clock
    sfn: Any
    workflows: dict[str, Workflow[Any, Any]] = field(default_factory=dict)
    _dispatcher: LambdaDispatcher | None = field(default=None, repr=False)

    def resolve(self, name: str) -> Workflow[Any, Any]:
        """The workflow registered as ``name`` (raises UnknownWorkflowError naming the known ones)."""
        return self.workflows.get(name) or get_workflow(name)

    def wake(self, handle: str) -> None:
        """Answer a parked loop; a token that already timed out or was answered is ignored."""
        wake_with(self.sfn, handle)

    @property
    def dispatcher(self) -> LambdaDispatcher:
        """Invokes the activity function (``ACTIVITY_FUNCTION``); built on first use."""
        if self._dispatcher is None:
            if not self.settings.activity_function:
                raise ConfigurationError("ACTIVITY_FUNCTION is not set for this function")
            from durable.runtime.aws_dispatch import REPLY_GRACE_SECONDS, LambdaDispatcher

            waiting = boto3.client(
                "lambda",
                config=Config(
                    read_timeout=self.settings.inline_seconds + REPLY_GRACE_SECONDS,
                    retries={"total_max_attempts": 1},
                    max_pool_connections=64,
                ),
            )
            plain = boto3.client("lambda", config=Config(max_pool_connections=64))
            self._dispatcher = LambdaDispatcher(
                waiting, plain, self.settings.activity_function, self.clock
            )
        return self._dispatcher


MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
"""An Orchestrate task's timeout when no timer bounds it (see aws_loop.MAX_PARK_SECONDS)."""
WORKING_TIMEOUT_SECONDS = 960
"""The shortest timeout a woken Orchestrate task gets: its Lambda (at most 15 minutes) always
finishes inside it, so a second orchestrator never starts beside a working one."""


def default_decision() -> dict[str, Any]:
    """The ``$.decision`` of a fresh execution: nothing counted, no wait, a week's timeout."""
    return {
        "events": 0,
        "recover": False,
        "failures": 0,
        "wait_seconds": 0,
        "timeout": MAX_TIMEOUT_SECONDS,
    }


def wake_handle(token: str, output: dict[str, Any], deadline: float | None) -> str:
    """What a parking orchestrator leaves on the instance for the next poster.

    ``output`` is the next ``$.decision``; ``deadline`` (epoch seconds) is when
    the parked task times out, kept for the woken task when it is far enough.
    """
    return json.dumps({"token": token, "output": output, "deadline": deadline})


def wake_with(sfn: Any, handle: str, *, wall: Callable[[], float] = time.time) -> None:
    """``SendTaskSuccess`` for a parked loop, ignoring tokens that are no longer waiting.

    ``handle`` is a :func:`wake_handle`, or a bare task token (then the answer
    is :func:`default_decision`).
    """
    token, output, deadline = handle, default_decision(), None
    if handle.startswith("{"):
        parsed = json.loads(handle)
        token, output, deadline = parsed["token"], dict(parsed["output"]), parsed.get("deadline")
    if deadline is not None:
        left = math.ceil(float(deadline) - wall())
        output["timeout"] = left if left >= WORKING_TIMEOUT_SECONDS else MAX_TIMEOUT_SECONDS
    try:
        sfn.send_task_success(taskToken=token, output=json.dumps(output))
    except sfn.exceptions.TaskTimedOut:
        pass  # the park already timed out: the loop is orchestrating anyway
    except sfn.exceptions.InvalidToken:
        pass  # answered before (a racing poster) or from an execution that ended
    except sfn.exceptions.TaskDoesNotExist:
        pass


_lock = threading.Lock()
_cache: dict[Settings, Services] = {}
_store_factory: StoreFactory = dynamodb_store
_clock: Clock = SystemClock()


def configure(*, store_factory: StoreFactory | None = None, clock: Clock | None = None) -> None:
    """Replace how the store is built and where time comes from (for tests); drops the cache."""
    global _store_factory, _clock
    with _lock:
        if store_factory is not None:
            _store_factory = store_factory
        if clock is not None:
            _clock = clock
        _cache.clear()


def reset() -> None:
    """Back to the production store and the system clock; drops the cache."""
    global _store_factory, _clock
    with _lock:
        _store_factory = dynamodb_store
        _clock = SystemClock()
        _cache.clear()


def services() -> Services:
    """The services for the current environment, built on first use.

    Raises:
        ConfigurationError: a required variable is missing, or a module of
            ``DURABLE_MODULES`` cannot be imported.
    """
    settings = Settings.from_env()
    with _lock:
        found = _cache.get(settings)
        if found is not None:
            return found
        modules = load_modules(list(settings.modules)) if settings.modules else []
        sfn = boto3.client("stepfunctions")
        store = _store_factory(settings, lambda token: wake_with(sfn, token))
        built = Services(settings=settings, store=store, clock=_clock, sfn=sfn)
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, Workflow):
                    built.workflows.setdefault(value.name, value)
        _cache[settings] = built
        return built


# ----------------------------------------------------------------------------- executions

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def name_root(instance_id: str) -> str:
    """The stem of the execution names of an instance: readable, unique, at most 66 characters.

    Execution names allow 80 characters of ``[A-Za-z0-9_-]``; instance ids
    allow 256 of any Unicode, so the stem is a cleaned prefix plus a hash.
    """
    digest = hashlib.sha256(instance_id.encode("utf-8")).hexdigest()[:16]
    cleaned = _UNSAFE.sub("_", instance_id)[:48].strip("_") or "i"
    return f"{cleaned}-{digest}"


def execution_input(instance_id: str, generation: int = 0) -> dict[str, Any]:
    """The input of an execution of the loop (the same shape the hand-over builds)."""
    return {
        "instance_id": instance_id,
        "name_root": name_root(instance_id),
        "generation": generation,
        "decision": default_decision(),
    }


def start_execution(sfn: Any, state_machine_arn: str, instance_id: str) -> bool:
    """Start the first execution of ``instance_id``; False if it already exists (idempotent)."""
    body = execution_input(instance_id)
    try:
        sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=f"{body['name_root']}-0",
            input=json.dumps(body),
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        return False
    return True
