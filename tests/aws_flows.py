"""Workflows the AWS-loop tests run (imported by the Lambda functions via DURABLE_MODULES)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable import Context, RetryPolicy, activity, workflow


@activity(name="aws_flows.square")
def square(n: int) -> int:
    return n * n


@activity(name="aws_flows.add_one", local=True)
def add_one(n: int) -> int:
    return n + 1


_flaky_calls: dict[str, int] = {}


@activity(
    name="aws_flows.flaky_local",
    local=True,
    retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=5)),
)
def flaky_local(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] < 2:
        raise ConnectionError(f"transient failure #{_flaky_calls[key]}")
    return f"{key} ok after {_flaky_calls[key]} attempts"


@workflow(name="aws_flows.fan_out")
def fan_out(ctx: Context, n: int) -> Any:
    """n activities at once through one Map."""
    results = yield ctx.all([ctx.call(square, i) for i in range(n)])
    return sum(results)


@workflow(name="aws_flows.local_chain")
def local_chain(ctx: Context, n: int) -> Any:
    """n local activities in a row: no Step Functions transition between them."""
    value = 0
    for _ in range(n):
        value = yield ctx.call(add_one, value)
    return value


@workflow(name="aws_flows.remote_chain")
def remote_chain(ctx: Context, n: int) -> Any:
    """n remote activities in a row: one Map (and one Lambda) per step."""
    value = 0
    for i in range(n):
        value += yield ctx.call(square, i)
    return value


@workflow(name="aws_flows.mixed")
def mixed(ctx: Context, key: str) -> Any:
    """A local activity that fails once (retried after a durable timer), then a remote one."""
    first = yield ctx.call(flaky_local, key)
    squared = yield ctx.call(square, 7)
    return {"first": first, "squared": squared}


@workflow(name="aws_flows.parent")
def parent(ctx: Context, n: int) -> Any:
    """A child workflow runs in its own execution; its result wakes the parked parent."""
    total = yield ctx.child(fan_out, n)
    return total + 1


@activity(name="aws_flows.big")
def big(size: int) -> str:
    return "x" * size


@workflow(name="aws_flows.big_payload")
def big_payload(ctx: Context, size: int) -> Any:
    """A result far over Step Functions' 256 KB limit: only references travel through it."""
    text = yield ctx.call(big, size)
    return len(text)


@workflow(name="aws_flows.activity_and_timer")
def activity_and_timer(ctx: Context, n: int) -> Any:
    """An activity while a timer runs: the loop parks, the activity starts asynchronously."""
    results = yield ctx.all([ctx.call(square, n), ctx.sleep(timedelta(minutes=1))])
    return results[0]


@workflow(name="aws_flows.naps")
def naps(ctx: Context, n: int) -> Any:
    """``n`` one-minute sleeps, each an iteration of the loop; the total of an activity."""
    total = 0
    for i in range(n):
        yield ctx.sleep(timedelta(minutes=1))
        total += yield ctx.call(square, i)
    return total


@workflow(name="aws_flows.long_sleep")
def long_sleep(ctx: Context, days: int) -> Any:
    """One sleep longer than a Step Functions execution may last (a year)."""
    yield ctx.sleep(timedelta(days=days))
    return days
