"""Creating instances: the checks every entry point (Runtime, CLI, API) applies the same way."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from durable.codec import decode, encode
from durable.errors import InstanceExistsError
from durable.history import WorkflowStarted
from durable.store.base import HistoryStore
from durable.workflow import Workflow

MAX_INSTANCE_ID_LENGTH = 256


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is usable as an instance id.

    Raises:
        ValueError: empty, over 256 characters, containing control characters or
            lone surrogates.
    """
    if not isinstance(instance_id, str) or not instance_id.strip():
        raise ValueError(f"instance id must be a non-empty string, got {instance_id!r}")
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise ValueError(
            f"instance id is {len(instance_id)} characters long; "
            f"the limit is {MAX_INSTANCE_ID_LENGTH}"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in instance_id):
        raise ValueError(f"instance id {instance_id!r} contains control characters")
    check_text(instance_id, "instance id")
    return instance_id


def check_text(text: str, what: str) -> str:
    """Return ``text`` if a store can keep it: no lone surrogates (not valid UTF-8).

    Raises:
        ValueError: naming ``what``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {text!r} is not valid Unicode text (a lone surrogate at {exc.start})"
        ) from None
    return text


def encode_input(workflow: Workflow[Any, Any], value: Any) -> Any:
    """The stored form of ``value`` as input of ``workflow``, checked against its input type.

    Raises:
        SerializationError: the value cannot be encoded or does not fit the input type.
    """
    what = f"input of workflow {workflow.name!r}"
    payload = encode(value, workflow.codec, what=what)
    decode(payload, workflow.input_type, what=what)
    return payload


def create_instance(
    store: HistoryStore,
    workflow: Workflow[Any, Any],
    payload: Any,
    instance_id: str | None,
    now: datetime,
) -> tuple[str, bool]:
    """Create an instance of ``workflow`` with encoded input ``payload``; idempotent on the id.

    Returns ``(instance_id, created)``: ``created`` is False when an instance
    with that id, workflow and first input already existed (nothing changes).

    Raises:
        InstanceExistsError: the id is taken by another workflow or other input.
        ValueError: the id is not usable (see :func:`check_instance_id`).
    """
    iid = check_instance_id(instance_id) if instance_id is not None else uuid.uuid4().hex
    started = WorkflowStarted(workflow=workflow.name, input=payload, seq=1, timestamp=now)
    if store.create(iid, started):
        return iid, True
    first_run = store.history(iid, run=1)
    first = first_run[0] if first_run else None
    if not isinstance(first, WorkflowStarted) or first.workflow != workflow.name:
        raise InstanceExistsError(iid, "and runs another workflow")
    if first.input != payload:
        raise InstanceExistsError(iid, "with different input")
    return iid, False
