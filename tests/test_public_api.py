"""The public API is what ``durable.__all__`` exports: pinned here, changed only on purpose."""

from __future__ import annotations

import inspect

import durable
import durable.testing

EXPECTED = {
    "Activity",
    "ActivityError",
    "ActivityInfo",
    "Cancelled",
    "ConfigurationError",
    "ConflictError",
    "Context",
    "DurableError",
    "Event",
    "HistoryStore",
    "InstanceExistsError",
    "InstanceFinishedError",
    "InstanceNotFoundError",
    "InstanceStatus",
    "MemoryStore",
    "NonDeterminismError",
    "RetryPolicy",
    "Runtime",
    "SQLiteStore",
    "SerializationError",
    "Status",
    "Task",
    "UnknownWorkflowError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowResult",
    "activity",
    "activity_info",
    "dump_history",
    "load_history",
    "open_store",
    "run",
    "workflow",
}

CONTEXT_API = {
    "call",
    "sleep",
    "sleep_until",
    "wait_for_event",
    "all",
    "any",
    "child",
    "continue_as_new",
    "now",
    "uuid",
    "random",
    "set_status",
    "patched",
    "is_replaying",
}


def test_all_is_pinned() -> None:
    assert set(durable.__all__) == EXPECTED
    assert len(durable.__all__) == len(set(durable.__all__))
    assert durable.__all__ == sorted(durable.__all__)


def test_every_exported_name_exists() -> None:
    for name in durable.__all__:
        assert getattr(durable, name) is not None, name


def test_errors_share_one_root_and_cancelled_escapes_except_exception() -> None:
    for name in durable.__all__:
        obj = getattr(durable, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj is not durable.Cancelled:
            assert issubclass(obj, durable.DurableError), name
    assert not issubclass(durable.Cancelled, Exception)


def test_context_has_the_documented_calls() -> None:
    missing = {name for name in CONTEXT_API if not hasattr(durable.Context, name)}
    assert missing == set()
    params = inspect.signature(durable.Context.wait_for_event).parameters
    assert list(params)[1:3] == ["event", "timeout"]
    assert params["name"].kind is inspect.Parameter.KEYWORD_ONLY
    for name in ("call", "sleep", "sleep_until", "wait_for_event", "all", "any", "child"):
        assert "name" in inspect.signature(getattr(durable.Context, name)).parameters, name


def test_retry_policy_defaults() -> None:
    policy = durable.RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.initial_interval.total_seconds() == 1
    assert policy.backoff == 2.0
    assert policy.max_interval is None
    assert policy.non_retryable == ()


def test_testing_helpers_are_public_and_documented() -> None:
    for name in durable.testing.__all__:
        obj = getattr(durable.testing, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"durable.testing.{name} has no docstring"
    assert "replay_history" in durable.testing.__all__
