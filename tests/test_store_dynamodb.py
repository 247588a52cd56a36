"""DynamoDBStore beyond the conformance suite (which runs against it through conftest.py).

Everything runs against moto in-process (``mock_aws``). Crashes are injected
at the boto3 boundary only: a client wrapper that raises after N calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from durable.errors import ConfigurationError, ConflictError, SerializationError
from durable.history import (
    ActivityCompleted,
    ActivityScheduled,
    ChildResult,
    ChildScheduled,
    Event,
    Status,
    StatusSet,
)
from durable.replay import ChildStart, OutgoingMessage
from durable.store import open_store
from durable.store.dynamodb import DynamoDBStore, create_table
from tests.moto_dynamodb import serialized_moto_dynamodb
from tests.test_store_conformance import advance, at, create, decision_for, event, message, started

TABLE = "durable-test"
BUCKET = "durable-test-payloads"


@dataclass
class Aws:
    db: Any
    s3: Any

    def store(self, client: Any = None, **kwargs: Any) -> DynamoDBStore:
        kwargs.setdefault("bucket", BUCKET)
        return DynamoDBStore(TABLE, client=client or self.db, s3_client=self.s3, **kwargs)

    def items(self, instance_id: str) -> dict[str, dict[str, Any]]:
        """Every raw item of an instance, by sort key."""
        found: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {
            "TableName": TABLE,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": instance_id}},
        }
        while True:
            page = self.db.query(**kwargs)
            found.update({i["sk"]["S"]: i for i in page["Items"]})
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def staging(self, instance_id: str) -> list[str]:
        """Sort keys of the staging items (``x#...``) an instance still has."""
        got = self.db.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :x)",
            ExpressionAttributeValues={":pk": {"S": instance_id}, ":x": {"S": "x#"}},
        )
        return [i["sk"]["S"] for i in got["Items"]]

    def s3_keys(self) -> list[str]:
        got = self.s3.list_objects_v2(Bucket=BUCKET)
        return [o["Key"] for o in got.get("Contents", [])]


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws(), serialized_moto_dynamodb():
        db = boto3.client("dynamodb", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        create_table(db, TABLE)
        s3.create_bucket(Bucket=BUCKET)
        yield Aws(db, s3)


class Crash(Exception):
    """The process died here."""


class CrashingClient:
    """A boto3 DynamoDB client that works for ``calls`` calls, then raises on every one."""

    def __init__(self, client: Any, calls: int) -> None:
        self._client = client
        self.left = calls
        self.seen: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.left <= 0:
                raise Crash(name)
            self.left -= 1
            self.seen.append(name)
            return method(*args, **kwargs)

        return call


class StopAfter:
    """A boto3 DynamoDB client that dies on the first call after ``method`` succeeded ``times``."""

    def __init__(self, client: Any, method: str, times: int = 1) -> None:
        self._client = client
        self._method = method
        self._left = times
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash(name)
            result = method(*args, **kwargs)
            if name == self._method:
                self._left -= 1
                self.dead = self._left <= 0
            return result

        return call


class HookClient:
    """A boto3 DynamoDB client that runs ``hook`` once, just before the first ``method`` call."""

    def __init__(self, client: Any, method: str, hook: Any) -> None:
        self._client = client
        self._method = method
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name != self._method or self._hook is None:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            hook, self._hook = self._hook, None
            hook()
            return method(*args, **kwargs)

        return call


# ----------------------------------------------------------------------------- concurrency


def test_eight_threads_commit_one_winner_per_version_and_lose_nothing(aws: Aws) -> None:
    store = aws.store()
    create(store, "a")
    per_thread, threads_n = 6, 8
    won: list[tuple[int, int, int]] = []  # (version, thread, k)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(me: int) -> None:
        mine = aws.store()  # its own store object on the shared (thread-safe) client
        try:
            k = 0
            while k < per_thread:
                snapshot = mine.load("a")
                decision = decision_for(snapshot.history, "a", events=[event(k, f"{me}-{k}")])
                try:
                    version = mine.commit(decision, expected_version=snapshot.version)
                except ConflictError:
                    continue
                with lock:
                    won.append((version, me, k))
                k += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    total = per_thread * threads_n
    assert sorted(v for v, _, _ in won) == list(range(2, total + 2))  # one winner per version
    history = store.history("a")
    assert [e.seq for e in history] == list(range(1, total + 2))
    values = [str(getattr(e, "value", "")) for e in history[1:]]
    for me in range(threads_n):
        assert [v for v in values if v.startswith(f"{me}-")] == [
            f"{me}-{k}" for k in range(per_thread)
        ]
    by_version = {v: f"{me}-{k}" for v, me, k in won}
    assert values == [by_version[v] for v in range(2, total + 2)]
    assert store.load("a").version == total + 1


# ----------------------------------------------------------------------------- size


def test_a_history_of_5000_fat_events_loads_in_order_over_several_pages(aws: Aws) -> None:
    counting = CrashingClient(aws.db, calls=10**9)
    store = aws.store(client=counting)
    history: list[Event] = [create(store, "long")]
    fat = "x" * 1200
    for chunk in range(5):
        decision = decision_for(
            history, "long", events=[event(i, f"{chunk}-{i}-{fat}") for i in range(1000)]
        )
        store.commit(decision, expected_version=chunk + 1)
        history = decision.events
    counting.seen.clear()

    snapshot = store.load("long")

    assert [e.seq for e in snapshot.history] == list(range(1, 5002))
    assert getattr(snapshot.history[-1], "value", "").startswith("4-999-")
    assert counting.seen.count("query") >= 5  # 6 MB of events: several 1 MB pages
    assert store.history("long") == snapshot.history
    assert aws.staging("long") == []  # staging cleaned up


def test_a_5_mb_result_goes_to_s3_and_round_trips(aws: Aws) -> None:
    store = aws.store()
    create(store, "big")
    big = {"blob": "é" * (5 * 1024 * 1024 // 2)}

    advance(
        store,
        "big",
        ActivityCompleted(task_id=1, result=big),
        status=Status.COMPLETED,
        output=big,
    )

    completed = store.history("big")[1]
    assert isinstance(completed, ActivityCompleted) and completed.result == big
    header = store.get("big")
    assert header is not None and header.output == big
    items = aws.items("big")
    pointers = [i["s3"]["S"] for i in items.values() if "s3" in i]
    assert len(pointers) == 2  # the event and the header
    assert all("body" not in i for i in items.values() if "s3" in i)
    assert sorted(pointers) == sorted(aws.s3_keys())

    assert store.delete("big") is True
    assert aws.s3_keys() == []  # deleting the instance deletes its payloads


def test_small_payloads_stay_inline(aws: Aws) -> None:
    store = aws.store()
    create(store, "a", input={"small": True})
    store.post("a", message("m", data="hi"))

    assert aws.s3_keys() == []
    assert all("body" in i for sk, i in aws.items("a").items())


def test_without_a_bucket_an_oversized_payload_raises_and_writes_nothing(aws: Aws) -> None:
    store = aws.store(bucket=None)
    create(store, "a")
    store.post("a", message("fits", data="y" * 300_000))  # over the threshold, fits an item
    before = store.load("a")

    with pytest.raises(SerializationError, match="bucket"):
        advance(store, "a", ActivityCompleted(task_id=1, result="z" * 500_000))
    with pytest.raises(SerializationError, match="bucket"):
        store.post("a", message("huge", data="z" * 500_000))
    with pytest.raises(SerializationError, match="bucket"):
        store.create("b", started(input="z" * 500_000))

    assert store.load("a") == before
    assert store.get("b") is None


def test_a_superseded_header_payload_is_deleted_from_s3(aws: Aws) -> None:
    store = aws.store(payload_threshold=1000)
    create(store, "a", input="i" * 5000)
    first = aws.s3_keys()
    advance(store, "a", event(1))

    assert len(aws.s3_keys()) == 2  # the new header and the first event
    assert not set(first) >= set(aws.s3_keys())
    header = store.get("a")
    assert header is not None and header.input == "i" * 5000


# ----------------------------------------------------------------------------- big decisions


def _fan_out(store: DynamoDBStore, instance_id: str) -> Any:
    """A decision of ~200 items: 150 activities, 40 consumed messages, children, messages."""
    create(store, instance_id)
    create(store, f"{instance_id}-target")
    create(store, f"{instance_id}-taken")
    for i in range(40):
        store.post(instance_id, message(f"r{i}"))
    snapshot = store.load(instance_id)
    events: list[Any] = [
        ActivityScheduled(task_id=i, activity="work", input=i) for i in range(1, 151)
    ]
    events.append(ChildScheduled(task_id=151, workflow="kid", child_id=f"{instance_id}-kid"))
    events.append(ChildScheduled(task_id=152, workflow="kid", child_id=f"{instance_id}-taken"))
    decision = decision_for(
        snapshot.history,
        instance_id,
        events=events,
        consumed=[f"r{i}" for i in range(40)],
        children=[
            ChildStart(f"{instance_id}-kid", started("kid", parent=(instance_id, 151))),
            ChildStart(f"{instance_id}-taken", started("kid", parent=(instance_id, 152))),
        ],
        messages=[OutgoingMessage(f"{instance_id}-target", message("hello"))],
        wake_at=at(500),
    )
    return snapshot, decision


def _check_all_or_nothing(store: DynamoDBStore, instance_id: str, before: Any) -> bool:
    """The instance shows the whole commit or none of it; returns whether it committed."""
    after = store.load(instance_id)
    target = [m for m in store.load(f"{instance_id}-target").inbox if m.id == "hello"]
    kid = store.get(f"{instance_id}-kid")
    if after.version == before.version:
        assert after == before
        assert target == []
        assert kid is None
        return False
    assert after.version == before.version + 1
    assert [e.seq for e in after.history] == list(range(1, 153 + 1))
    assert len(after.inbox) == 1 and isinstance(after.inbox[0], ChildResult)  # the taken child
    assert [m.id for m in target] == ["hello"]
    assert kid is not None and kid.parent_id == instance_id
    assert store.history(f"{instance_id}-kid")[0].kind == "WorkflowStarted"
    return True


def test_a_decision_of_more_than_100_items_commits_atomically(aws: Aws) -> None:
    counting = CrashingClient(aws.db, calls=10**9)
    store = aws.store(client=counting)
    snapshot, decision = _fan_out(store, "fan")
    counting.seen.clear()

    assert store.commit(decision, expected_version=snapshot.version) == snapshot.version + 1

    assert counting.seen.count("transact_write_items") >= 2  # more than one transaction
    assert _check_all_or_nothing(store, "fan", snapshot)
    taken = store.load("fan").inbox[0]
    assert isinstance(taken, ChildResult) and taken.status == Status.FAILED
    header = store.get("fan")
    assert header is not None and header.wake_at == at(500)
    assert store.get("fan-taken") is not None and store.history("fan-taken")[0] == started()
    meta = aws.items("fan")["meta"]
    assert "intent" not in meta
    assert (meta["posted"]["N"], meta["consumed"]["N"]) == ("41", "40")
    assert aws.staging("fan") == []


def test_a_stale_big_decision_conflicts_and_leaves_nothing(aws: Aws) -> None:
    store = aws.store()
    snapshot, decision = _fan_out(store, "fan")
    advance(store, "fan", event(1))
    before = store.load("fan")

    with pytest.raises(ConflictError):
        store.commit(decision, expected_version=snapshot.version)

    assert store.load("fan") == before
    assert store.get("fan-kid") is None
    assert store.load("fan-target").inbox == []
    assert aws.staging("fan") == []


def test_a_big_commit_overtaken_before_its_commit_point_conflicts_and_leaves_nothing(
    aws: Aws,
) -> None:
    store = aws.store()
    snapshot, decision = _fan_out(store, "fan")
    # another step commits while this one stages its writes
    racing = aws.store(client=HookClient(aws.db, "batch_write_item", lambda: advance(store, "fan")))

    with pytest.raises(ConflictError):
        racing.commit(decision, expected_version=snapshot.version)

    after = store.load("fan")
    assert after.version == snapshot.version + 1
    assert [e.seq for e in after.history] == [1]
    assert len(after.inbox) == 40
    assert store.get("fan-kid") is None
    assert store.load("fan-target").inbox == []
    assert aws.staging("fan") == []  # staging removed


def test_a_final_commit_racing_a_post_still_empties_the_inbox(aws: Aws) -> None:
    store = aws.store()
    create(store, "a")
    store.post("a", message("m1"))
    snapshot = store.load("a")
    decision = decision_for(
        snapshot.history, "a", events=[event(1)], status=Status.COMPLETED, consumed=["m1"]
    )
    late = aws.store(
        client=HookClient(aws.db, "transact_write_items", lambda: store.post("a", message("late")))
    )

    late.commit(decision, expected_version=snapshot.version)

    assert store.load("a").inbox == []
    assert not any(sk.startswith("i#") for sk in aws.items("a"))
    meta = aws.items("a")["meta"]
    assert meta["posted"] == meta["consumed"] == {"N": "2"}
    assert store.post("a", message("after")) is False


def test_a_crash_at_any_point_of_a_big_commit_leaves_all_or_nothing(aws: Aws) -> None:
    store = aws.store()
    counting = CrashingClient(aws.db, calls=10**9)
    snapshot, decision = _fan_out(store, "probe")
    aws.store(client=counting).commit(decision, expected_version=snapshot.version)
    calls = len(counting.seen)
    assert calls > 8

    outcomes = []
    for crash_at in range(calls):
        iid = f"c{crash_at}"
        snapshot, decision = _fan_out(store, iid)
        crashing = aws.store(client=CrashingClient(aws.db, calls=crash_at))
        with pytest.raises(Crash):
            crashing.commit(decision, expected_version=snapshot.version)
        outcomes.append(_check_all_or_nothing(store, iid, snapshot))  # a reader rolls forward
        # nothing is delivered twice when others finish the same commit again
        assert [m.id for m in store.load(f"{iid}-target").inbox] == (
            ["hello"] if outcomes[-1] else []
        )
        assert len(store.load(iid).inbox) == (1 if outcomes[-1] else 40)
    assert outcomes[0] is False and outcomes[-1] is True
    assert False in outcomes and True in outcomes


def test_a_crash_while_rolling_forward_is_finished_by_the_next_reader(aws: Aws) -> None:
    store = aws.store()
    snapshot, decision = _fan_out(store, "fan")
    # the commit point, then one transaction of the roll-forward, then death
    crashing = aws.store(client=StopAfter(aws.db, "transact_write_items", times=2))

    with pytest.raises(Crash):
        crashing.commit(decision, expected_version=snapshot.version)

    assert "intent" in aws.items("fan")["meta"]  # the crash left a roll-forward pending
    header = store.get("fan")
    assert header is not None and header.version == snapshot.version + 1
    store.post("fan-target", message("other"))  # others keep working meanwhile
    assert _check_all_or_nothing(store, "fan", snapshot)
    assert "intent" not in aws.items("fan")["meta"]
    assert [m.id for m in store.load("fan-target").inbox] == ["hello", "other"]


# ----------------------------------------------------------------------------- park and wake


def test_park_stores_the_token_and_a_post_wakes_exactly_once(aws: Aws) -> None:
    woken: list[str] = []
    store = aws.store(waker=woken.append)
    create(store, "a")

    assert store.park("a", "token-1") is True
    assert aws.items("a")["meta"]["token"] == {"S": "token-1"}
    assert woken == []

    store.post("a", message("m1"))
    store.post("a", message("m2"))

    assert woken == ["token-1"]
    assert "token" not in aws.items("a")["meta"]


def test_park_with_messages_waiting_returns_false(aws: Aws) -> None:
    woken: list[str] = []
    store = aws.store(waker=woken.append)
    create(store, "a")
    store.post("a", message("m1"))

    assert store.park("a", "token-1") is False

    assert "token" not in aws.items("a")["meta"]
    advance(store, "a", event(1), consumed=["m1"])
    assert store.park("a", "token-2") is True  # the inbox is empty again
    assert woken == []


def test_park_on_a_finished_or_unknown_instance(aws: Aws) -> None:
    store = aws.store(waker=lambda token: None)
    create(store, "a")
    advance(store, "a", event(1), status=Status.COMPLETED)

    assert store.park("a", "t") is False
    with pytest.raises(Exception, match="nope"):
        store.park("nope", "t")


def test_a_commit_clears_a_stale_token_and_wakes_the_instances_it_messages(aws: Aws) -> None:
    woken: list[str] = []
    store = aws.store(waker=woken.append)
    create(store, "mom")
    assert store.create("kid", started(parent=("mom", 1)))
    assert store.park("mom", "mom-token") is True
    assert store.park("kid", "stale-kid-token") is True  # e.g. a Park that timed out

    note = ChildResult(task_id=1, run=1, child_id="kid", status=Status.COMPLETED, result=1)
    advance(
        store,
        "kid",
        event(1),
        status=Status.COMPLETED,
        messages=[OutgoingMessage("mom", note)],
    )

    assert woken == ["mom-token"]
    assert "token" not in aws.items("kid")["meta"]


def test_a_failing_waker_keeps_the_token_for_a_repeated_post(aws: Aws) -> None:
    calls: list[str] = []

    def flaky(token: str) -> None:
        calls.append(token)
        if len(calls) == 1:
            raise RuntimeError("SendTaskSuccess failed")

    store = aws.store(waker=flaky)
    create(store, "a")
    store.park("a", "t1")

    with pytest.raises(RuntimeError):
        store.post("a", message("m"))
    assert aws.items("a")["meta"]["token"] == {"S": "t1"}

    assert store.post("a", message("m")) is True  # the sender retries: a redelivery
    assert calls == ["t1", "t1"]
    assert [m.id for m in store.load("a").inbox] == ["m"]


def test_park_racing_a_post_never_loses_the_wake_up(aws: Aws) -> None:
    woken: list[str] = []
    store = aws.store(waker=woken.append)
    rounds = 60
    parked: list[bool] = []
    barrier = threading.Barrier(2, timeout=30)

    def parker() -> None:
        for r in range(rounds):
            barrier.wait()
            time.sleep(0.003 * (r % 4))  # vary who goes first: every order happens
            parked.append(store.park(f"r{r}", f"token-{r}"))
            barrier.wait()

    def poster() -> None:
        for r in range(rounds):
            barrier.wait()
            time.sleep(0.003 * ((r + 2) % 4))
            store.post(f"r{r}", message("m"))
            barrier.wait()

    for r in range(rounds):
        create(store, f"r{r}")
    threads = [threading.Thread(target=parker), threading.Thread(target=poster)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(parked) == rounds
    for r in range(rounds):
        got_token = f"token-{r}" in woken
        assert parked[r] is False or got_token, f"round {r}: parked and never woken"
        assert not (parked[r] is False and got_token)
    assert len(woken) == len(set(woken))  # nobody is woken twice
    assert 0 < parked.count(True) < rounds  # both orders did happen


# ----------------------------------------------------------------------------- delete, open_store


def test_a_crashed_delete_is_finished_by_the_next_create(aws: Aws) -> None:
    store = aws.store()
    create(store, "a")
    store.post("a", message("m"))
    advance(store, "a", event(1))
    counting = CrashingClient(aws.db, calls=2)  # marks the header, lists the items, dies

    with pytest.raises(Crash):
        aws.store(client=counting).delete("a")

    assert store.get("a") is None
    assert [h.instance_id for h in store.list_instances()] == []
    fresh = create(store, "a", "again")
    snapshot = store.load("a")
    assert snapshot.history == [fresh] and snapshot.inbox == [] and snapshot.version == 1


def test_open_store_dynamodb_url(aws: Aws) -> None:
    store = open_store(f"dynamodb://{TABLE}?region=us-east-1&bucket={BUCKET}")
    assert isinstance(store, DynamoDBStore)
    assert store.table_name == TABLE and store.bucket == BUCKET
    create(store, "via-url")
    assert aws.store().get("via-url") is not None
    plain = open_store(f"dynamodb://{TABLE}?region=us-east-1")
    assert isinstance(plain, DynamoDBStore) and plain.bucket is None
    assert store.list_instances() == plain.list_instances()

    with pytest.raises(ConfigurationError, match="names no table"):
        open_store("dynamodb://")
    with pytest.raises(ConfigurationError, match="colour"):
        open_store(f"dynamodb://{TABLE}?colour=blue")


def test_status_set_events_keep_their_values(aws: Aws) -> None:
    store = aws.store()
    create(store, "a")
    advance(store, "a", StatusSet(value={"nested": [1, 2.5, None]}, timestamp=at(1)))

    assert store.history("a")[1] == StatusSet(
        seq=2, value={"nested": [1, 2.5, None]}, timestamp=at(1)
    )


@pytest.mark.parametrize("extra_events", [0, 150], ids=["one-transaction", "staged"])
def test_a_message_to_a_child_created_by_the_same_commit_arrives(
    aws: Aws, extra_events: int
) -> None:
    store = aws.store()
    create(store, "mom")
    note = message("welcome")

    advance(
        store,
        "mom",
        ChildScheduled(task_id=1, workflow="kid", child_id="kid"),
        *[event(i) for i in range(extra_events)],
        children=[ChildStart("kid", started("kid", parent=("mom", 1)))],
        messages=[OutgoingMessage("kid", note)],
    )

    assert store.load("kid").inbox == [note]
    meta = aws.items("kid")["meta"]
    assert (meta["posted"]["N"], meta["consumed"]["N"]) == ("1", "0")
    assert store.park("kid", "t") is False  # the message is waiting


def test_a_final_staged_commit_empties_a_big_inbox(aws: Aws) -> None:
    store = aws.store()
    create(store, "a")
    for i in range(120):
        store.post("a", message(f"m{i}"))
    snapshot = store.load("a")

    store.commit(
        decision_for(
            snapshot.history, "a", events=[event(1)], status=Status.FAILED, consumed=["m0"]
        ),
        expected_version=snapshot.version,
    )

    assert store.load("a").inbox == []
    items = aws.items("a")
    assert not any(sk.startswith(("i#", "x#")) for sk in items)
    assert items["meta"]["posted"] == items["meta"]["consumed"] == {"N": "120"}


def test_a_big_commit_delivers_its_messages_with_its_commit_point(aws: Aws) -> None:
    store = aws.store()
    snapshot, decision = _fan_out(store, "fan")
    dies = aws.store(client=StopAfter(aws.db, "transact_write_items"))  # the commit point

    with pytest.raises(Crash):
        dies.commit(decision, expected_version=snapshot.version)

    assert "intent" in aws.items("fan")["meta"]
    assert [m.id for m in store.load("fan-target").inbox] == ["hello"]  # already there
    assert store.get("fan-kid") is not None
    assert "fan" in store.ready(at(0))  # a pending roll-forward is work
    assert _check_all_or_nothing(store, "fan", snapshot)


def test_two_interrupted_huge_commits_messaging_each_other_both_finish(aws: Aws) -> None:
    """Too many children for the commit point: deliveries wait for phase 2 of the roll-forward."""
    store = aws.store()
    create(store, "a")
    create(store, "b")
    decisions = {}
    for me, other in (("a", "b"), ("b", "a")):
        snapshot = store.load(me)
        kids = [f"{me}-kid-{i}" for i in range(55)]
        decisions[me] = decision_for(
            snapshot.history,
            me,
            events=[event(i) for i in range(150)],
            children=[ChildStart(k, started("kid", parent=(me, 1))) for k in kids],
            messages=[OutgoingMessage(other, message(f"from-{me}"))],
        )

    def b_commits_and_dies() -> None:
        dies = aws.store(client=StopAfter(aws.db, "transact_write_items"))
        with pytest.raises(Crash):
            dies.commit(decisions["b"], expected_version=1)

    # a plans, then b commits and dies, then a passes its commit point and dies too
    a_client = StopAfter(
        HookClient(aws.db, "transact_write_items", b_commits_and_dies), "transact_write_items"
    )
    with pytest.raises(Crash):
        aws.store(client=a_client).commit(decisions["a"], expected_version=1)
    for iid in ("a", "b"):
        meta = aws.items(iid)["meta"]
        assert "intent" in meta and "phase" not in meta
    assert store.get("a-kid-0") is None and store.get("b-kid-0") is None

    store.load("a")  # a's roll-forward delivers to b, which first needs its own phase 1
    store.load("b")

    a, b = store.load("a"), store.load("b")
    assert (a.version, b.version) == (2, 2)
    assert [m.id for m in a.inbox] == ["from-b"]
    assert [m.id for m in b.inbox] == ["from-a"]
    assert len(a.history) == len(b.history) == 151
    assert all(store.get(f"{me}-kid-{i}") is not None for me in "ab" for i in range(55))
    for iid in ("a", "b"):
        assert "intent" not in aws.items(iid)["meta"]
        assert aws.staging(iid) == []


def test_a_child_id_taken_before_phase_2_fails_that_child_only(aws: Aws) -> None:
    store = aws.store()
    create(store, "mom")
    snapshot = store.load("mom")
    kids = [f"kid-{i}" for i in range(55)]  # too many for the commit point
    decision = decision_for(
        snapshot.history,
        "mom",
        events=[
            ChildScheduled(task_id=i + 1, workflow="kid", child_id=k) for i, k in enumerate(kids)
        ],
        children=[ChildStart(k, started("kid", parent=("mom", i + 1))) for i, k in enumerate(kids)],
    )
    dies = aws.store(client=StopAfter(aws.db, "transact_write_items"))
    with pytest.raises(Crash):
        dies.commit(decision, expected_version=snapshot.version)
    assert store.get("kid-7") is None
    create(store, "kid-7", "stranger")  # someone takes the id before the roll-forward

    inbox = store.load("mom").inbox
    store.load("mom")  # a second roll-forward changes nothing

    assert len(inbox) == 1 and isinstance(inbox[0], ChildResult)
    assert (inbox[0].child_id, inbox[0].task_id, inbox[0].status) == ("kid-7", 8, Status.FAILED)
    assert store.load("mom").inbox == inbox
    stranger = store.get("kid-7")
    assert stranger is not None and stranger.workflow == "stranger"
    assert all(store.get(k) is not None for k in kids)
    meta = aws.items("mom")["meta"]
    assert (meta["posted"]["N"], meta["consumed"]["N"]) == ("1", "0")


def test_a_repeated_phase_2_does_not_deliver_a_consumed_message_again(aws: Aws) -> None:
    store = aws.store()
    create(store, "mom")
    create(store, "target")
    snapshot = store.load("mom")
    kids = [f"kid-{i}" for i in range(55)]
    decision = decision_for(
        snapshot.history,
        "mom",
        events=[event(i) for i in range(10)],
        children=[ChildStart(k, started("kid", parent=("mom", 1))) for k in kids],
        messages=[OutgoingMessage("target", message("hello"))],
    )
    # commit point + one phase-1 transaction + 55 children + the delivery, then death
    dies = aws.store(client=StopAfter(aws.db, "transact_write_items", times=1 + 1 + 55 + 1))
    with pytest.raises(Crash):
        dies.commit(decision, expected_version=snapshot.version)
    assert "intent" in aws.items("mom")["meta"]
    assert [m.id for m in store.load("target").inbox] == ["hello"]
    advance(store, "target", event(1), consumed=["hello"])  # the target uses it

    store.load("mom")  # finishes the roll-forward: phase 2 again, markers say done

    assert store.load("target").inbox == []
    assert "intent" not in aws.items("mom")["meta"]


# ----------------------------------------------------------------------------- remembered headers


class CountingClient:
    """A boto3 DynamoDB client that counts the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def test_a_step_on_an_unchanged_instance_costs_one_query_and_one_transaction(aws: Aws) -> None:
    counting = CountingClient(aws.db)
    store = aws.store(counting)
    create(store, "a")
    full = store.load("a")
    version = store.commit(decision_for(full.history, "a", events=[event(1)]), expected_version=1)
    store.post("a", message("m"))
    counting.calls.clear()

    snapshot = store.load("a", after=2)
    store.commit(
        decision_for([*full.history, event(1)], "a", events=[event(2)], consumed=[]),
        expected_version=snapshot.version,
    )

    assert snapshot.version == version and snapshot.history == []
    assert [m.id for m in snapshot.inbox] == ["m"]
    assert counting.calls == ["query", "transact_write_items"]
    assert [m.id for m in store.load("a").inbox] == ["m"]  # not consumed: still there


def test_a_remembered_header_never_hides_another_writers_commit(aws: Aws) -> None:
    mine, theirs = aws.store(), aws.store()
    create(mine, "a")
    snapshot = mine.load("a")
    advance(theirs, "a", event(1))  # another worker commits version 2

    tail = mine.load("a", after=1)  # what a live run would ask for
    with pytest.raises(ConflictError):
        mine.commit(decision_for(snapshot.history, "a", events=[event(9)]), expected_version=1)

    assert tail.version == 2 and [e.seq for e in tail.history] == [2]
    assert [getattr(e, "value", None) for e in mine.history("a")] == [None, "event 1"]


def test_a_post_after_the_load_survives_a_commit_made_from_a_remembered_header(
    aws: Aws,
) -> None:
    mine, theirs = aws.store(), aws.store()
    create(mine, "a")
    mine.post("a", message("old"))
    snapshot = mine.load("a")
    theirs.post("a", message("new"))  # the version does not move: the commit goes ahead

    mine.commit(
        decision_for(snapshot.history, "a", events=[event(1)], consumed=["old"]),
        expected_version=snapshot.version,
    )
    assert [m.id for m in mine.load("a").inbox] == ["new"]
    final = mine.load("a", after=2)
    mine.commit(
        decision_for([*snapshot.history, event(1)], "a", status=Status.COMPLETED),
        expected_version=final.version,
    )

    assert mine.load("a").inbox == []
    assert theirs.post("a", message("late")) is False


def test_a_header_remembered_at_an_older_version_is_read_again_not_taken_for_a_conflict(
    aws: Aws,
) -> None:
    mine, theirs = aws.store(), aws.store()
    create(mine, "a")
    mine.load("a")  # mine remembers version 1
    advance(theirs, "a", event(1))  # version 2, through another store object
    snapshot = theirs.load("a")

    mine.commit(
        decision_for(snapshot.history, "a", events=[event(2)]), expected_version=snapshot.version
    )

    assert [getattr(e, "value", None) for e in mine.history("a")] == [None, "event 1", "event 2"]
