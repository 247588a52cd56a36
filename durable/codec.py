"""Payload and exception codecs.

Payloads are stored as JSON. With the default ``"json"`` codec, values are
turned into JSON by pydantic (models, dataclasses, datetimes, UUIDs, ...) and
rebuilt on the way back from the type annotations of the receiving function,
so an activity annotated ``-> User`` hands the workflow a ``User`` on the
first run and on every replay alike. The opt-in ``"pickle"`` codec wraps the
cloudpickled value in ``{"$pickle": base64}`` for values JSON cannot carry.

Exceptions are recorded as :class:`ErrorInfo`: type, message, traceback and,
when picklable, a cloudpickled copy so that the workflow can ``except`` the
original type.
"""

from __future__ import annotations

import base64
import functools
import inspect
import math
import traceback as tb
import typing
from collections.abc import Callable
from typing import Any, Literal

import cloudpickle
import pydantic
import pydantic_core
from pydantic import BaseModel

from durable.errors import ActivityError, SerializationError

Codec = Literal["json", "pickle"]
"""The name of a payload codec: ``"json"`` (default) or ``"pickle"`` (cloudpickle)."""

_PICKLE_KEY = "$pickle"


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, or just ``QualName`` for builtins."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


MAX_NESTING = 100
"""How deeply lists and objects may nest in a JSON payload. Stores parse JSON with a
recursion limit (pydantic's is 200 levels for a whole event), so a deeper payload,
once written, could never be read back: :func:`encode` refuses it."""


def check_nesting(payload: Any, what: str) -> Any:
    """Return ``payload`` (encoded JSON) if a store can keep it and give it back unchanged.

    Raises:
        SerializationError: naming ``what``, when it nests more than ``MAX_NESTING``
            levels deep, or holds NaN or an infinity (JSON has neither: they would
            come back as ``null``).
    """
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise SerializationError(f"{what} holds {value}, which JSON cannot represent")
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_NESTING:
            raise SerializationError(
                f"{what} nests lists or objects more than {MAX_NESTING} levels deep"
            )
        stack.extend((child, depth + 1) for child in children)
    return payload


def encode(value: Any, codec: Codec = "json", *, what: str = "value") -> Any:
    """Turn ``value`` into a JSON-compatible structure with ``codec``.

    Raises:
        SerializationError: naming ``what`` when the value cannot be encoded, or
            could not be read back (see :func:`check_nesting`).
    """
    if codec == "pickle":
        try:
            blob = cloudpickle.dumps(value)
        except Exception as exc:
            raise SerializationError(f"cannot pickle {what}: {exc}") from exc
        return {_PICKLE_KEY: base64.b64encode(blob).decode("ascii")}
    try:
        payload = pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise SerializationError(
            f"{what} of type {type(value).__name__} is not JSON-serializable "
            f"(use codec='pickle' on the workflow or activity for such values): {exc}"
        ) from exc
    except ValueError as exc:  # pydantic's own limit: "Maximum serialization depth"
        raise SerializationError(f"{what} cannot be encoded: {exc}") from None
    return check_nesting(payload, what)


def decode(data: Any, annotation: Any = None, *, what: str = "value") -> Any:
    """Rebuild a value encoded by :func:`encode`, validated against ``annotation``.

    A pickled payload is unpickled whatever the annotation. ``None`` or ``Any``
    as annotation return the JSON structure unchanged.

    Raises:
        SerializationError: naming ``what`` when the value does not match.
    """
    if isinstance(data, dict) and len(data) == 1 and _PICKLE_KEY in data:
        try:
            return cloudpickle.loads(base64.b64decode(data[_PICKLE_KEY]))
        except Exception as exc:
            raise SerializationError(f"cannot unpickle {what}: {exc}") from exc
    if annotation is None or annotation is Any or annotation is inspect.Parameter.empty:
        return data
    try:
        return _adapter(annotation).validate_python(data)
    except pydantic.ValidationError as exc:
        raise SerializationError(f"{what} does not match {_type_label(annotation)}: {exc}") from exc


@functools.lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def _type_label(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


@functools.lru_cache(maxsize=1024)
def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``fn`` (empty where they cannot be resolved)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``fn``'s signature, computed once (every replayed call checks its arguments against it)."""
    try:
        return inspect.signature(fn)
    except ValueError:  # builtins without a signature: nothing to check
        return None


def encode_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], codec: Codec, what: str
) -> dict[str, Any]:
    """Encode a call's arguments as ``{"args": [...], "kwargs": {...}}``.

    Raises:
        SerializationError: when the arguments do not fit ``fn``'s signature or codec.
    """
    signature = _signature(fn)
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SerializationError(f"bad arguments for {what}: {exc}") from None
    return {
        "args": [encode(a, codec, what=f"argument {i} of {what}") for i, a in enumerate(args)],
        "kwargs": {
            k: encode(v, codec, what=f"argument {k!r} of {what}") for k, v in kwargs.items()
        },
    }


def decode_arguments(
    fn: Callable[..., Any], payload: dict[str, Any], what: str
) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild the arguments encoded by :func:`encode_arguments`, typed by ``fn``'s hints."""
    hints = type_hints(fn)
    signature = _signature(fn)
    params = list(signature.parameters.values()) if signature is not None else []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args = []
    for i, raw in enumerate(payload.get("args", [])):
        name = positional[i].name if i < len(positional) else None
        args.append(decode(raw, hints.get(name) if name else None, what=f"argument {i} of {what}"))
    kwargs = {
        k: decode(v, hints.get(k), what=f"argument {k!r} of {what}")
        for k, v in payload.get("kwargs", {}).items()
    }
    return args, kwargs


def return_annotation(fn: Callable[..., Any]) -> Any:
    """The declared result type of an activity or workflow (``None`` if not declared).

    For a generator function annotated ``Generator[Y, S, R]`` this is ``R``.
    """
    hint = type_hints(fn).get("return")
    if hint is None:
        return None
    origin = typing.get_origin(hint)
    if origin is not None and getattr(origin, "__name__", "") in ("Generator", "Iterator"):
        params = typing.get_args(hint)
        return params[2] if len(params) == 3 else None
    return hint


class ErrorInfo(BaseModel):
    """An exception as recorded in the history."""

    type: str
    """Qualified name of the exception type, e.g. ``"ValueError"`` or ``"shop.OutOfStock"``."""
    message: str
    traceback: str = ""
    types: list[str] = []
    """Qualified names of every class in the exception's MRO (for retry filters)."""
    pickled: str | None = None
    """Base64 cloudpickle of the exception, when it could be pickled."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Record ``exc`` (with its traceback, and pickled when possible)."""
        pickled: str | None
        try:
            blob = cloudpickle.dumps(exc)
            cloudpickle.loads(blob)  # some exceptions pickle but cannot be rebuilt
            pickled = base64.b64encode(blob).decode("ascii")
        except Exception:
            pickled = None
        return cls(
            type=qualified_name(type(exc)),
            message=str(exc),
            traceback="".join(tb.format_exception(exc)),
            types=[qualified_name(c) for c in type(exc).__mro__ if c is not object],
            pickled=pickled,
        )

    def to_exception(self) -> BaseException:
        """The original exception if it can be rebuilt, else an :class:`ActivityError`."""
        if self.pickled is not None:
            try:
                exc = cloudpickle.loads(base64.b64decode(self.pickled))
                if isinstance(exc, BaseException):
                    return exc
            except Exception:
                pass
        return ActivityError(self.type, self.message, self.traceback)
