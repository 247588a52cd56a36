"""Workers on one DynamoDB table know of each other: heartbeat items (moto).

Each :class:`Runtime` below has its own :class:`DynamoDBStore` object (its own
boto3 client) on one moto table, as runtimes in separate processes would, so
nothing but the table tells them about each other. A runtime starting while
another runs an activity attempt leaves it alone (the attempt runs once); one
starting after the other died (its heartbeat expired, or it closed abandoning
attempts) adopts the attempt and the instance completes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from durable import Context, Runtime, Status, activity, workflow
from durable.runtime.presence_dynamodb import TTL_SECONDS, WORKERS_PK, DynamoDBPresence
from durable.runtime.start import check_instance_id, create_instance, encode_input
from durable.runtime.step import step
from durable.store.dynamodb import DynamoDBStore
from durable.testing import EPOCH
from durable.workflow import get_workflow
from tests.reliability.harness import check_history

TABLE = "durable"
_runs: Counter[str] = Counter()
_lock = threading.Lock()
_gate = threading.Event()


@activity(name="rel_presence.step")
def rel_presence_step(key: str) -> str:
    """The first run of each key waits for the gate (an attempt in flight); later runs do not."""
    with _lock:
        _runs[key] += 1
        first = _runs[key] == 1
    if first:
        _gate.wait(30)
    return f"done {key}"


@workflow(name="rel_presence_flow")
def rel_presence_flow(ctx: Context, key: str) -> Generator[Any, Any, str]:
    result: str = yield ctx.call(rel_presence_step, key)
    return result


@pytest.fixture
def new_store() -> Iterator[Callable[[], DynamoDBStore]]:
    """Opens stores on one moto table, each with its own client (one per "process")."""
    import boto3
    from moto import mock_aws

    from durable.store.dynamodb import create_table
    from tests.moto_dynamodb import serialized_moto_dynamodb

    _runs.clear()
    _gate.clear()
    with mock_aws(), serialized_moto_dynamodb():
        create_table(boto3.client("dynamodb", region_name="us-east-1"), TABLE)

        def opened() -> DynamoDBStore:
            return DynamoDBStore(TABLE, client=boto3.client("dynamodb", region_name="us-east-1"))

        try:
            yield opened
        finally:
            _gate.set()  # let abandoned attempt threads end


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _heartbeats(store: DynamoDBStore) -> list[str]:
    items = store.client.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": WORKERS_PK}},
        ConsistentRead=True,
    )["Items"]
    return [str(item["sk"]["S"]) for item in items]


def test_heartbeat_items_are_no_instances(new_store: Callable[[], DynamoDBStore]) -> None:
    store = new_store()
    with pytest.raises(ValueError, match="control characters"):
        check_instance_id(WORKERS_PK)
    runtime = Runtime(store, workflows=(rel_presence_flow,))
    try:
        assert len(_heartbeats(store)) == 1
        assert store.list_instances(limit=1000) == []
        assert store.ready(EPOCH.replace(year=2100)) == []
        assert store.get(WORKERS_PK) is None
    finally:
        runtime.close()
    assert _heartbeats(store) == []  # a clean close removes the item


def test_a_runtime_starting_while_another_runs_an_attempt_leaves_it_alone(
    new_store: Callable[[], DynamoDBStore],
) -> None:
    first = Runtime(new_store(), workflows=(rel_presence_flow,))
    second: Runtime | None = None
    try:
        iid = first.start(rel_presence_flow, "a", instance_id="busy")
        _until(lambda: _runs["a"] == 1)  # in flight on the first runtime
        second = Runtime(new_store(), workflows=(rel_presence_flow,))
        time.sleep(2.5)  # its start-up recovery and one look for dead workers
        assert _runs["a"] == 1, "the second runtime ran an attempt a live worker was running"
        _gate.set()
        assert second.wait(iid, timeout=20) == "done a"
    finally:
        first.close()
        if second is not None:
            second.close()
    assert _runs == {"a": 1}
    store = new_store()
    check_history(store.history(iid), iid)
    assert _heartbeats(store) == []


def _dead_worker_dispatched(store: DynamoDBStore, key: str, clock: Callable[[], float]) -> str:
    """A worker that created an instance, committed the step scheduling its activity,
    and died before running it: its heartbeat item stays and stops beating."""
    DynamoDBPresence(store.client, TABLE, clock=clock)  # never refreshed, never closed
    payload = encode_input(rel_presence_flow, key)
    iid, _ = create_instance(store, rel_presence_flow, payload, f"dead-{key}", EPOCH)
    decision = step(store, iid, get_workflow, EPOCH)
    assert decision is not None and len(decision.dispatch) == 1
    _runs[key] += 1  # as if it had started the attempt and died in it
    return iid


def test_a_runtime_starting_after_the_other_died_recovers_its_attempt(
    new_store: Callable[[], DynamoDBStore],
) -> None:
    store = new_store()
    iid = _dead_worker_dispatched(store, "b", clock=lambda: time.time() - 3600)
    runtime = Runtime(new_store(), workflows=(rel_presence_flow,))
    try:
        assert runtime.wait(iid, timeout=20) == "done b"
    finally:
        runtime.close()
    assert _runs["b"] == 2  # the dead worker's start, and the adopted attempt
    assert _heartbeats(store) == []  # the dead worker's item was removed by who found it


def test_a_heartbeat_that_expires_later_is_found_by_the_running_sweep(
    new_store: Callable[[], DynamoDBStore],
) -> None:
    store = new_store()
    # The dead worker's last heartbeat expires about 1.5 s from now.
    iid = _dead_worker_dispatched(store, "c", clock=lambda: time.time() - TTL_SECONDS + 1.5)
    runtime = Runtime(new_store(), workflows=(rel_presence_flow,))
    try:
        time.sleep(0.5)
        assert _runs["c"] == 1, "adopted while the other worker's heartbeat was valid"
        header = store.get(iid)
        assert header is not None and header.status == Status.RUNNING
        assert runtime.wait(iid, timeout=20) == "done c"
    finally:
        runtime.close()
    assert _runs["c"] == 2


def test_a_runtime_closing_with_an_attempt_in_flight_hands_it_to_the_live_one(
    new_store: Callable[[], DynamoDBStore],
) -> None:
    first = Runtime(new_store(), workflows=(rel_presence_flow,))
    second: Runtime | None = None
    try:
        iid = first.start(rel_presence_flow, "d", instance_id="handed")
        _until(lambda: _runs["d"] == 1)  # in flight on the first runtime
        second = Runtime(new_store(), workflows=(rel_presence_flow,))
        time.sleep(0.5)
        assert _runs["d"] == 1
        first.close()  # abandons the attempt: its item is left expired
        assert second.wait(iid, timeout=20) == "done d"
    finally:
        first.close()
        if second is not None:
            second.close()
    assert _runs["d"] == 2
