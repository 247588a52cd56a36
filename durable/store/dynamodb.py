"""The DynamoDB store: instances in one table, large payloads in S3, wake-ups for the AWS loop.

Table layout (``create_table`` and ``infra/template.yaml`` declare exactly this):

* Key schema: partition key ``pk`` (S) = instance id, sort key ``sk`` (S).
  On-demand billing (``PAY_PER_REQUEST``).
* ``sk = "meta"``: the header. ``body`` (S, the :class:`~durable.history.InstanceStatus`
  JSON) or ``s3`` (S, an S3 key holding it), and the copies queries and conditions
  need: ``st`` status, ``wf`` workflow, ``ca`` created at, ``ver`` version (N),
  ``run`` (N), ``wake`` wake-at (absent when none), ``posted`` / ``consumed``
  inbox counters (N), ``inc`` (a uuid per incarnation of the id), and while
  applicable ``token`` (a parked Step Functions task token), ``intent`` / ``phase`` /
  ``parts`` (a commit being rolled forward, see below), ``del`` (being deleted)
  and ``by`` (the commit that created this instance as a child).
* ``sk = "h#<run:06d>#<seq:012d>"``: one history event, ``body`` or ``s3``.
* ``sk = "i#<message id>"``: one inbox message, ``body`` or ``s3``, and ``ord``
  (S), its arrival order (time in ns + a counter + random; ``load`` sorts by it).
  Keying by message id makes redelivery a failed ``attribute_not_exists``.
* ``sk = "x#<commit id>#..."``: staging of a commit too big for one transaction.
* GSI ``by_status``: partition key ``st`` (S), sort key ``ca`` (S), projection
  ALL. Only headers carry ``st``, so it holds one item per instance; listing
  reads it newest first (``ScanIndexForward=False``), ``wf`` is a filter.
  Like every GSI it is eventually consistent: ``list_instances`` and ``ready``
  may lag a write by a moment on real DynamoDB.

Datetimes are stored as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (UTC, fixed
width), so string order is time order. Any payload (event, message or header
JSON) longer than ``payload_threshold`` bytes goes to S3 under
``<sha256(instance id)>/<kind>-<uuid>.json`` and the item keeps the key; without
a bucket, payloads stay inline up to what an item can hold and a bigger one
raises :class:`~durable.errors.SerializationError` before anything is written.

Commits
-------
A commit reads the header and the inbox keys, then writes everything in ONE
``TransactWriteItems`` whose header update is conditioned on ``ver`` (and on no
roll-forward pending, and, for a final status, on ``posted`` being what was
read so the whole inbox is emptied). Children are ``Put`` with
``attribute_not_exists``, messages to other instances are ``Put`` if absent
with their target's ``posted`` incremented on condition that it is unfinished;
a condition of those failing (the world changed since the reads) re-plans.

A decision needing more than 100 items or 3.5 MB (a fan-out of 300
activities, a fan-in consuming 300 results) is a redo log whose commit point is
one transaction on the header::

    1. stage   x#<T>#p#<n> items: the instance's own history puts and inbox
               deletes, as JSON (invisible: no reader looks at x# items)
    2. COMMIT  TransactWriteItems: meta = the new header + intent=T, parts=n
               IF ver = v, plus the children and the messages to other instances
               when they fit (else they are staged too, for phase 2)
               -- before this nothing is visible; after it the commit has happened
    3. phase 1 the staged own writes, each transaction guarded by a ConditionCheck
               "meta intent = T AND no phase", then SET phase = 2
       phase 2 staged children and messages (only if they did not fit in 2), each
               guarded by "intent = T" and a marker x#<T>#d#<i> put if absent
    4. clear   REMOVE intent, parts, phase IF intent = T; then delete the x#<T> items

Whoever meets a header with an ``intent`` runs steps 3-4 first ("roll
forward"): ``load``, ``history`` and ``commit`` all of them, ``post`` and the
deliveries of other commits phase 1 only (posts are accepted again from phase
2). So a crash after 2 is finished by the next reader (and ``ready`` lists an
instance with a pending roll-forward), and a crash before 2 leaves only
invisible staging items (removed with the instance). Replaying step 3 is
harmless: history puts and inbox deletes are idempotent while phase 1 lasts
(no commit or post touches the instance then), the markers stop a second
delivery or child, and once ``phase`` or the intent changes, a slow
roll-forwarder's guarded writes fail. Phase 1 writes one instance only and a
roll-forward never needs another instance past its phase 1, so roll-forwards
cannot wait on each other in a loop. Readers of the instance see a commit
entirely or not at all, and nothing twice; only phase-2 messages and children
(more than ~98 writes to other instances in one decision) become visible to
their targets after the commit point, when the roll-forward delivers them.

Wake-up protocol (the AWS loop's Park state)
--------------------------------------------
``post`` is one transaction: put the inbox item (if absent) and ``posted += 1``
on the header. ``commit`` adds the messages it consumed to ``consumed``. So the
inbox is empty exactly when ``posted == consumed``. :meth:`DynamoDBStore.park`
sets ``token`` only if ``posted == consumed``; every post, after its
transaction, reads the header consistently and, if a token is there, removes
it with ``attribute_exists(token)`` (so exactly one poster takes it) and calls
``waker(token)``::

    orchestrator          park(T)                         poster
    commit (consumed=c)
                          SET token IF posted==consumed
                                                          PUT item, posted+=1   (a)
                                                          GET token (consistent)
                                                          REMOVE token IF exists (b)
                                                          -> waker(T)

    * park before (a): the token is stored when the read runs, so (b) takes it: woken.
    * park after (a): posted > consumed, park is refused (False): the loop
      orchestrates at once and sees the message.
    * park cannot succeed between (a) and (b) unless a commit consumed the message
      meanwhile; then (b) wakes a loop that has nothing new: a spurious wake, harmless.

A commit removes any stale token (the loop is orchestrating, so no Park waits).
If ``waker`` raises, the token is put back (unless a newer one is there) and
the error propagates from ``post``; a repeated post of the same message finds it
there and wakes again. ``commit`` logs such an error instead of raising it,
because its write has happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from durable.errors import ConflictError, DurableError, InstanceNotFoundError, SerializationError
from durable.history import (
    Event,
    InstanceStatus,
    Message,
    Status,
    WorkflowStarted,
    event_from_json,
    event_to_json,
    message_from_json,
    message_to_json,
)
from durable.replay import ChildStart, Decision
from durable.store.base import Snapshot, child_taken_message, header_for, statuses, updated_header

__all__ = ["GSI_NAME", "DynamoDBStore", "create_table"]

log = logging.getLogger(__name__)

GSI_NAME = "by_status"
"""The global secondary index listing headers by status, newest first."""

_META = "meta"
_TX_ITEMS = 100
"""DynamoDB's limit of actions in one TransactWriteItems."""
_TX_BYTES = 3_500_000
"""Our budget per transaction (DynamoDB's limit is 4 MB)."""
_ITEM_BUDGET = 350_000
"""Largest inline payload (DynamoDB's item limit is 400 KB, keys and attributes included)."""
_PART_BYTES = 300_000
"""Target size of one staging item of a multi-transaction commit."""
_RETRIES = 50
_KNOWN_HEADERS = 1000
"""Header items remembered between a load and the commit after it (per store object)."""
_TERMINAL = [s.value for s in Status if s.is_terminal]
_Item = dict[str, Any]


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _hkey(run: int, seq: int) -> str:
    return f"h#{run:06d}#{seq:012d}"


def _ikey(message_id: str) -> str:
    return f"i#{message_id}"


def _key(instance_id: str, sk: str) -> _Item:
    return {"pk": _s(instance_id), "sk": _s(sk)}


_NAME = re.compile(r"#(\w+)")


def _expr(**parts: Any) -> dict[str, Any]:
    """Expression arguments, naming every ``#attr`` used (DynamoDB rejects unused names)."""
    out: dict[str, Any] = {}
    names: set[str] = set()
    values = parts.pop("values", None)
    for arg, text in parts.items():
        if text:
            out[arg] = text
            names.update(_NAME.findall(text))
    if names:
        out["ExpressionAttributeNames"] = {f"#{n}": n for n in names}
    if values:
        out["ExpressionAttributeValues"] = values
    return out


_NOT_TERMINAL = "NOT (#st IN (:t0, :t1, :t2, :t3))"
_TERMINAL_VALUES = {f":t{i}": _s(s) for i, s in enumerate(_TERMINAL)}
_OPEN = "attribute_exists(#pk) AND attribute_not_exists(#del)"


class _Gone(Exception):
    """An S3 payload was deleted after its item was read: read again."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reasons(exc: ClientError) -> list[str]:
    """Per-action codes of a cancelled transaction ("None" for actions that were fine)."""
    reasons = exc.response.get("CancellationReasons")
    if reasons is None:  # some clients only put them in the message
        found = re.search(r"\[(.*)\]", str(exc.response.get("Error", {}).get("Message", "")))
        return [r.strip() for r in found.group(1).split(",")] if found else []
    return [str(r.get("Code", "None")) for r in reasons]


_EXPECTED = {"None", "ConditionalCheckFailed", "TransactionConflict"}


def _cancelled(exc: ClientError) -> list[str]:
    """The reasons of a cancelled transaction; re-raises any other error."""
    if _code(exc) != "TransactionCanceledException":
        raise exc
    reasons = _reasons(exc)
    if not reasons or not set(reasons) <= _EXPECTED:
        raise exc  # e.g. a validation error: trying again cannot help
    return reasons


def create_table(client: Any, table_name: str) -> None:
    """Create the store's table (on-demand, with the ``by_status`` GSI) and wait for it."""
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "st", "AttributeType": "S"},
            {"AttributeName": "ca", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": GSI_NAME,
                "KeySchema": [
                    {"AttributeName": "st", "KeyType": "HASH"},
                    {"AttributeName": "ca", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    client.get_waiter("table_exists").wait(TableName=table_name)


@dataclass
class _Plan:
    """The writes of one commit, split into the header update and the rest."""

    meta: _Item
    """The Update of the committing instance's header (the commit point)."""
    plain: list[_Item] = field(default_factory=list)
    """Idempotent Puts/Deletes (history, own inbox)."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    """Conditional groups: ``{"kind": "child"|"deliver", "target": id, "ops": [...]}``."""
    woken: set[str] = field(default_factory=set)
    """Instances that get messages (their parked loop is woken afterwards)."""
    uploads: list[str] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)
    """S3 keys that the commit makes unreachable (deleted after it)."""
    after: _Item | None = None
    """The header item as the commit leaves it (unfinished instances only)."""


def _size(op: _Item) -> int:
    return len(json.dumps(op, ensure_ascii=False).encode())


class DynamoDBStore:
    """A :class:`~durable.store.base.HistoryStore` in one DynamoDB table (see the module doc).

    Args:
        table_name: the table (create it with :func:`create_table` or the stack).
        client: a boto3 DynamoDB client (default ``boto3.client("dynamodb")``).
        s3_client: a boto3 S3 client for large payloads (default: one is made if
            ``bucket`` is given).
        bucket: where payloads over ``payload_threshold`` go; ``None``: nowhere
            (too big a payload raises ``SerializationError``).
        payload_threshold: payloads longer than this many bytes go to S3 (at most
            350,000: an item must stay under DynamoDB's 400 KB).
        waker: called with the task token of a parked loop when a message arrives
            for its instance (the AWS runtime passes one calling ``SendTaskSuccess``).
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        s3_client: Any = None,
        bucket: str | None = None,
        payload_threshold: int = 256 * 1024,
        waker: Callable[[str], None] | None = None,
    ) -> None:
        import boto3

        self.table_name = table_name
        self.bucket = bucket
        self.payload_threshold = min(payload_threshold, _ITEM_BUDGET)
        self._db: Any = client if client is not None else boto3.client("dynamodb")
        self._s3: Any = s3_client
        if self._s3 is None and bucket is not None:
            self._s3 = boto3.client("s3")
        self._waker = waker
        self._ord_lock = threading.Lock()
        self._last_ord = 0
        # Header items this store last read or wrote, so that the commit following a
        # load need not read the header again: the commit's condition on the
        # version catches a stale one (see commit).
        self._known: OrderedDict[str, _Item] = OrderedDict()
        self._known_lock = threading.Lock()

    # ------------------------------------------------------------------ payloads

    def _payload(self, instance_id: str, kind: str, text: str, uploads: list[str]) -> _Item:
        """``{"body": ...}`` or, for a large payload, ``{"s3": key}`` after uploading it."""
        size = len(text.encode())
        if size <= self.payload_threshold:
            return {"body": _s(text)}
        if self.bucket is None or self._s3 is None:
            if size <= _ITEM_BUDGET:
                return {"body": _s(text)}
            raise SerializationError(
                f"a {kind} of instance {instance_id!r} is {size:,} bytes, more than a"
                f" DynamoDB item holds; give the store an S3 bucket for large payloads"
            )
        digest = hashlib.sha256(instance_id.encode()).hexdigest()[:32]
        key = f"{digest}/{kind}-{uuid.uuid4().hex}.json"
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode())
        uploads.append(key)
        return {"s3": _s(key)}

    def _text(self, item: _Item) -> str:
        if "s3" in item:
            if self._s3 is None or self.bucket is None:
                raise DurableError("an item points to S3, but the store has no bucket")
            try:
                got = self._s3.get_object(Bucket=self.bucket, Key=item["s3"]["S"])
            except ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404"):
                    raise _Gone from exc  # a commit replaced it since we read the item
                raise
            return bytes(got["Body"].read()).decode()
        return str(item["body"]["S"])

    def _forget(self, keys: Iterable[str]) -> None:
        """Delete S3 objects nothing points to any more (best effort: leftovers are garbage)."""
        if self._s3 is None or self.bucket is None:
            return
        for key in keys:
            try:
                self._s3.delete_object(Bucket=self.bucket, Key=key)
            except ClientError:  # pragma: no cover - best effort
                log.warning("could not delete s3://%s/%s", self.bucket, key)

    def _ord(self) -> str:
        with self._ord_lock:
            now = max(time.time_ns(), self._last_ord + 1)
            self._last_ord = now
        return f"{now:020d}-{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ low-level reads

    def _get_meta(self, instance_id: str) -> _Item | None:
        got = self._db.get_item(
            TableName=self.table_name, Key=_key(instance_id, _META), ConsistentRead=True
        )
        item: _Item | None = got.get("Item")
        return item

    def _remember(self, instance_id: str, meta: _Item | None) -> None:
        with self._known_lock:
            self._known.pop(instance_id, None)
            if meta is not None:
                self._known[instance_id] = meta
                while len(self._known) > _KNOWN_HEADERS:
                    self._known.popitem(last=False)

    def _recall(self, instance_id: str, version: int) -> _Item | None:
        """The header item last seen at ``version``, if it was (taken out: used once)."""
        with self._known_lock:
            meta = self._known.pop(instance_id, None)
        if meta is None or int(meta["ver"]["N"]) != version:
            return None
        return meta

    def _open_meta(self, instance_id: str) -> _Item:
        meta = self._get_meta(instance_id)
        if meta is None or "del" in meta:
            raise InstanceNotFoundError(instance_id)
        return meta

    def _update_meta(
        self,
        instance_id: str,
        update: str,
        condition: str,
        values: dict[str, Any] | None = None,
        **extra: Any,
    ) -> _Item | None:
        """Update a header item if ``condition`` holds: the response, or None if it did not."""
        try:
            response: _Item = self._db.update_item(
                TableName=self.table_name,
                Key=_key(instance_id, _META),
                **extra,
                **_expr(UpdateExpression=update, ConditionExpression=condition, values=values),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        return response

    def _header(self, meta: _Item) -> InstanceStatus:
        return InstanceStatus.model_validate_json(self._text(meta))

    def _query(self, **kwargs: Any) -> Iterator[_Item]:
        kwargs["TableName"] = self.table_name
        while True:
            page = self._db.query(**kwargs)
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _partition(
        self, instance_id: str, low: str, high: str, *, keys_only: bool = False
    ) -> Iterator[_Item]:
        """Items of one instance with ``low <= sk <= high`` (``keys_only``: just ``sk``, ``s3``)."""
        return self._query(
            ConsistentRead=True,
            **_expr(
                KeyConditionExpression="#pk = :pk AND #sk BETWEEN :lo AND :hi",
                ProjectionExpression="#sk, #s3" if keys_only else None,
                values={":pk": _s(instance_id), ":lo": _s(low), ":hi": _s(high)},
            ),
        )

    def _batch_get(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], _Item]:
        found: dict[tuple[str, str], _Item] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [_key(pk, sk) for pk, sk in unique[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                got = self._db.batch_get_item(RequestItems=request)
                for item in got.get("Responses", {}).get(self.table_name, []):
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                request = got.get("UnprocessedKeys") or {}
        return found

    def _batch_write(self, requests: list[_Item]) -> None:
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.table_name: requests[start : start + 25]}
            while pending:
                got = self._db.batch_write_item(RequestItems=pending)
                pending = got.get("UnprocessedItems") or {}

    def _transact(self, ops: list[_Item]) -> None:
        self._db.transact_write_items(TransactItems=ops)

    # ------------------------------------------------------------------ create, get

    def _meta_values(
        self, instance_id: str, header: InstanceStatus, uploads: list[str]
    ) -> dict[str, Any]:
        """The header attributes a commit or create sets (``None``: remove the attribute)."""
        payload = self._payload(instance_id, "header", header.model_dump_json(), uploads)
        return {
            "body": payload.get("body"),
            "s3": payload.get("s3"),
            "st": _s(header.status.value),
            "wf": _s(header.workflow),
            "ca": _s(_ts(header.created_at)),
            "ver": _n(header.version),
            "run": _n(header.run),
            "wake": _s(_ts(header.wake_at)) if header.wake_at is not None else None,
        }

    def _new_instance_ops(
        self, instance_id: str, started: WorkflowStarted, uploads: list[str], **extra: Any
    ) -> list[_Item]:
        header = header_for(instance_id, started)
        values = self._meta_values(instance_id, header, uploads)
        meta = {k: v for k, v in values.items() if v is not None}
        meta.update(_key(instance_id, _META))
        meta.update(posted=_n(0), consumed=_n(0), inc=_s(uuid.uuid4().hex), **extra)
        first = {
            **_key(instance_id, _hkey(started.run, started.seq)),
            **self._payload(instance_id, "event", event_to_json(started), uploads),
        }
        return [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": meta,
                    **_expr(ConditionExpression="attribute_not_exists(#pk)"),
                }
            },
            {"Put": {"TableName": self.table_name, "Item": first}},
        ]

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        uploads: list[str] = []
        ops = self._new_instance_ops(instance_id, started, uploads)
        for _ in range(_RETRIES):
            try:
                self._transact(ops)
                return True
            except ClientError as exc:
                reasons = _cancelled(exc)
                if reasons[:1] != ["ConditionalCheckFailed"]:
                    continue  # a conflicting transaction: try again
                meta = self._get_meta(instance_id)
                if meta is not None and "del" in meta:
                    self._purge(instance_id)  # finish a deletion a crash interrupted
                    continue
                if meta is None:
                    continue
                self._forget(uploads)
                return False
        raise ConflictError(instance_id, 0, None)

    def get(self, instance_id: str) -> InstanceStatus | None:
        for _ in range(_RETRIES):
            meta = self._get_meta(instance_id)
            if meta is None or "del" in meta:
                return None
            try:
                return self._header(meta)
            except _Gone:
                continue
        raise ConflictError(instance_id, 0, None)  # pragma: no cover - endless commits

    # ------------------------------------------------------------------ load, history

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        if after is not None:
            unchanged = self._load_unchanged(instance_id, after)
            if unchanged is not None:
                return unchanged
        for _ in range(_RETRIES):
            meta = self._open_meta(instance_id)
            if "intent" in meta:
                self._roll_forward(instance_id, meta)
                continue
            run = int(meta["run"]["N"])
            history: list[_Item] = []
            inbox: list[_Item] = []
            last: _Item | None = None
            low = f"h#{run:06d}#" if after is None else _hkey(run, after + 1)
            for item in self._partition(instance_id, low, _META):
                sk = item["sk"]["S"]
                if sk.startswith(f"h#{run:06d}#"):
                    history.append(item)
                elif sk.startswith("i#"):
                    inbox.append(item)
                elif sk == _META:
                    last = item
            if last is None or "intent" in last or not _same(meta, last):
                continue  # a commit landed while reading: read again
            inbox.sort(key=lambda item: str(item["ord"]["S"]))
            self._remember(instance_id, last)
            try:
                return Snapshot(
                    self._header(last),
                    [event_from_json(self._text(i)) for i in history],
                    [message_from_json(self._text(i)) for i in inbox],
                )
            except _Gone:
                continue
        raise ConflictError(instance_id, 0, None)  # pragma: no cover - endless commits

    def _load_unchanged(self, instance_id: str, after: int) -> Snapshot | None:
        """One Query, for a caller that has every event up to ``after`` of the header last seen.

        Used only when the header is still the one this store last read or
        wrote (same version, no roll-forward) and nothing follows ``after``:
        then no commit happened since, and the inbox is all that is new. Any
        other case returns ``None`` (the full load reads header and items afresh).
        """
        with self._known_lock:
            known = self._known.get(instance_id)
        if known is None:
            return None
        run = int(known["run"]["N"])
        items = list(self._partition(instance_id, _hkey(run, after + 1), _META))
        last = items[-1] if items and items[-1]["sk"]["S"] == _META else None
        if (
            last is None
            or "intent" in last
            or "del" in last
            or last["ver"] != known["ver"]
            or last["run"] != known["run"]
            or any(not item["sk"]["S"].startswith("i#") for item in items[:-1])
        ):
            return None
        inbox = sorted(items[:-1], key=lambda item: str(item["ord"]["S"]))
        self._remember(instance_id, last)
        try:
            return Snapshot(
                self._header(last), [], [message_from_json(self._text(i)) for i in inbox]
            )
        except _Gone:
            return None

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        for _ in range(_RETRIES):
            meta = self._open_meta(instance_id)
            if "intent" in meta:
                self._roll_forward(instance_id, meta)
                continue
            wanted = run if run is not None else int(meta["run"]["N"])
            items = list(self._partition(instance_id, f"h#{wanted:06d}#", f"h#{wanted:06d}#~"))
            after = self._get_meta(instance_id)
            if after is None or "intent" in after or not _same(meta, after):
                if after is None or "del" in after:
                    raise InstanceNotFoundError(instance_id)
                continue
            try:
                return [event_from_json(self._text(i)) for i in items]
            except _Gone:
                continue
        raise ConflictError(instance_id, 0, None)  # pragma: no cover - endless commits

    # ------------------------------------------------------------------ commit

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        iid = decision.instance_id
        # Serialize first: a payload that cannot be stored must leave no trace.
        events = [(e.seq, event_to_json(e)) for e in decision.events]
        next_run = decision.next_run
        next_json = event_to_json(next_run) if next_run is not None else None
        outgoing = list(
            {
                (m.instance_id, m.message.id): (
                    m.instance_id,
                    m.message.id,
                    message_to_json(m.message),
                )
                for m in reversed(decision.messages)
            }.values()
        )[::-1]
        ends = decision.next_run is None and decision.status.is_terminal
        # Unless the commit ends the instance (its condition needs a fresh ``posted``),
        # the header read by the load is good enough: the transaction checks the version.
        known = None if ends else self._recall(iid, expected_version)
        for _ in range(_RETRIES):
            meta = known if known is not None else self._open_meta(iid)
            known = None
            if "intent" in meta:
                self._roll_forward(iid, meta)
                continue
            version = int(meta["ver"]["N"])
            if version != expected_version:
                raise ConflictError(iid, expected_version, version)
            try:
                header = updated_header(self._header(meta), decision)
            except _Gone:
                continue
            plan = self._plan(iid, meta, header, decision, events, next_json, outgoing)
            if plan is None:
                continue
            done = self._apply(iid, plan)  # on an error, uploads may be in use: keep them
            if not done:
                self._forget(plan.uploads)
                after = self._get_meta(iid)
                if after is None or "del" in after:
                    raise InstanceNotFoundError(iid)
                if int(after["ver"]["N"]) != expected_version:
                    raise ConflictError(iid, expected_version, int(after["ver"]["N"]))
                continue
            self._forget(plan.garbage)
            self._remember(iid, plan.after)
            if on_ready is not None:
                on_ready()
            for target in sorted(plan.woken):
                try:
                    self._wake(target)
                except Exception:
                    log.exception("waking the loop of instance %r failed", target)
            return header.version
        raise ConflictError(iid, expected_version, None)

    def _plan(
        self,
        iid: str,
        meta: _Item,
        header: InstanceStatus,
        decision: Decision,
        events: list[tuple[int, str]],
        next_json: str | None,
        outgoing: list[tuple[str, str, str]],
    ) -> _Plan | None:
        """The writes of ``decision``; ``None`` if another instance must be rolled forward first."""
        uploads: list[str] = []
        terminal = header.status.is_terminal
        values = self._meta_values(iid, header, uploads)
        old_s3 = meta.get("s3", {}).get("S")
        # The inbox is read only when the commit takes messages out of it or may put
        # one in that is already there (a redelivery); otherwise nothing of it matters.
        reads_inbox = (
            terminal
            or bool(decision.consumed)
            or bool(decision.children)
            or any(target == iid for target, _, _ in outgoing)
        )
        present = (
            {item["sk"]["S"]: item for item in self._partition(iid, "i#", "i#~", keys_only=True)}
            if reads_inbox
            else {}
        )
        gone = set(present) if terminal else {_ikey(m) for m in decision.consumed} & set(present)
        garbage = [present[k]["s3"]["S"] for k in gone if "s3" in present[k]]
        if old_s3:
            garbage.append(old_s3)

        # Who exists: children to create, targets of messages, their inboxes.
        child_ids = list(dict.fromkeys(c.instance_id for c in decision.children))
        target_ids = list(dict.fromkeys(t for t, _, _ in outgoing if t != iid))
        keys = [(c, _META) for c in child_ids] + [(t, _META) for t in target_ids]
        keys += [(t, _ikey(mid)) for t, mid, _ in outgoing if t != iid]
        found = self._batch_get(keys)
        for target in target_ids:
            other = found.get((target, _META))
            if other is not None and "intent" in other and "phase" not in other:
                self._forget(uploads)
                self._roll_forward(target, other, own_only=True)
                return None

        own: dict[str, _Item] = {}  # own inbox writes by sort key
        posted = 0
        new_children: dict[str, Any] = {}
        for child in decision.children:
            if (
                child.instance_id not in new_children
                and child.instance_id != iid
                and (child.instance_id, _META) not in found
            ):
                new_children[child.instance_id] = child
            elif not terminal:
                taken = child_taken_message(child)
                own[_ikey(taken.id)] = self._message_item(
                    iid, taken.id, message_to_json(taken), uploads
                )
        for target, mid, text in outgoing:
            if target == iid and not terminal:
                own[_ikey(mid)] = self._message_item(iid, mid, text, uploads)
        for sk in list(own):
            if sk in present and sk not in gone:
                del own[sk]  # already in the inbox: a redelivery
        posted = len(own)

        # The header update: the commit point.
        sets = [f"#{k} = :{k}" for k, v in values.items() if v is not None]
        removes = [f"#{k}" for k, v in values.items() if v is None] + ["#token"]
        av: dict[str, Any] = {f":{k}": v for k, v in values.items() if v is not None}
        av[":v"] = _n(int(meta["ver"]["N"]))
        condition = "#ver = :v AND attribute_not_exists(#intent) AND attribute_not_exists(#del)"
        if terminal:
            sets.append("#consumed = #posted")
            condition += " AND #posted = :p"
            av[":p"] = meta["posted"]
        else:
            sets.append("#consumed = #consumed + :c")
            av[":c"] = _n(len(gone))
        if posted:
            sets.append("#posted = #posted + :j")
            av[":j"] = _n(posted)
        update = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
        after: _Item | None = None
        if not terminal:
            after = {k: v for k, v in meta.items() if k != "token"}
            for k, v in values.items():
                if v is None:
                    after.pop(k, None)
                else:
                    after[k] = v
            after["consumed"] = _n(int(meta["consumed"]["N"]) + len(gone))
            after["posted"] = _n(int(meta["posted"]["N"]) + posted)
        plan = _Plan(
            meta={
                "Update": {
                    "TableName": self.table_name,
                    "Key": _key(iid, _META),
                    **_expr(UpdateExpression=update, ConditionExpression=condition, values=av),
                }
            },
            uploads=uploads,
            garbage=garbage,
            after=after,
        )

        # Idempotent writes: history, own inbox.
        run = decision.run
        for seq, text in events:
            item = {**_key(iid, _hkey(run, seq)), **self._payload(iid, "event", text, uploads)}
            plan.plain.append({"Put": {"TableName": self.table_name, "Item": item}})
        if decision.next_run is not None and next_json is not None:
            nr = decision.next_run
            item = {
                **_key(iid, _hkey(nr.run, nr.seq)),
                **self._payload(iid, "event", next_json, uploads),
            }
            plan.plain.append({"Put": {"TableName": self.table_name, "Item": item}})
        for sk in sorted(gone - set(own)):
            plan.plain.append({"Delete": {"TableName": self.table_name, "Key": _key(iid, sk)}})
        for item in own.values():
            plan.plain.append({"Put": {"TableName": self.table_name, "Item": item}})

        # Children, then messages to others (to new children too).
        for child_id, child in new_children.items():
            ops = self._new_instance_ops(child_id, child.started, uploads)
            plan.groups.append({"kind": "child", "target": child_id, "ops": ops})
        for target, mid, text in outgoing:
            if target == iid:
                continue
            if target in new_children:
                pass
            else:
                other = found.get((target, _META))
                if other is None or "del" in other or other["st"]["S"] in _TERMINAL:
                    continue
                if (target, _ikey(mid)) in found:
                    continue
            item = self._message_item(target, mid, text, uploads)
            plan.groups.append({"kind": "deliver", "target": target, "ops": [item]})
            plan.woken.add(target)
        return plan

    def _message_item(
        self, instance_id: str, message_id: str, text: str, uploads: list[str]
    ) -> _Item:
        return {
            **_key(instance_id, _ikey(message_id)),
            "ord": _s(self._ord()),
            **self._payload(instance_id, "message", text, uploads),
        }

    def _apply(self, iid: str, plan: _Plan) -> bool:
        """Write ``plan``; False if a condition failed before the commit point (nothing written)."""
        cross = self._cross_ops(plan)
        single = [plan.meta, *plan.plain, *cross]
        if _fits(single):
            try:
                self._transact(single)
                return True
            except ClientError as exc:
                _cancelled(exc)
                return False
        plan.after = None  # the redo log leaves more on the header: read it afresh next time
        return self._apply_staged(iid, plan, cross if _fits([plan.meta, *cross]) else None)

    def _cross_ops(self, plan: _Plan) -> list[_Item]:
        """Children and deliveries as transaction actions, folded per target."""
        ops: list[_Item] = []
        new_children: dict[str, list[_Item]] = {}
        for group in plan.groups:
            if group["kind"] == "child":
                new_children[group["target"]] = group["ops"]
        per_target: dict[str, list[_Item]] = {}
        for group in plan.groups:
            if group["kind"] == "deliver":
                per_target.setdefault(group["target"], []).extend(group["ops"])
        for child_id, child_ops in new_children.items():
            messages = per_target.pop(child_id, [])
            if messages:  # the new child starts with them in its inbox
                put = child_ops[0]["Put"]
                item = {**put["Item"], "posted": _n(len(messages))}
                child_ops = [{"Put": {**put, "Item": item}}, *child_ops[1:]]
            ops.extend(child_ops)
            ops.extend({"Put": {"TableName": self.table_name, "Item": m}} for m in messages)
        for target, messages in per_target.items():
            ops.extend(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": m,
                        **_expr(ConditionExpression="attribute_not_exists(#sk)"),
                    }
                }
                for m in messages
            )
            ops.append(self._bump(target, len(messages)))
        return ops

    def _bump(self, target: str, count: int) -> _Item:
        """``posted += count`` on an open, unfinished target with no roll-forward pending."""
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _key(target, _META),
                **_expr(
                    UpdateExpression="SET #posted = #posted + :one",
                    ConditionExpression=(
                        f"{_OPEN} AND (attribute_not_exists(#intent) OR #phase = :two)"
                        f" AND {_NOT_TERMINAL}"
                    ),
                    values={":one": _n(count), ":two": _n(2), **_TERMINAL_VALUES},
                ),
            }
        }

    # ------------------------------------------------------------------ multi-transaction commits

    def _apply_staged(self, iid: str, plan: _Plan, cross: list[_Item] | None) -> bool:
        """Steps 1-4 of the module doc; ``cross``: the writes to other instances, if they fit
        into the commit point's transaction (else they are staged for phase 2)."""
        tx = uuid.uuid4().hex
        ops: list[dict[str, Any]] = [{"kind": "plain", "ops": [op]} for op in plan.plain]
        if cross is None:
            ops.extend(plan.groups)
        parts: list[list[dict[str, Any]]] = [[]]
        size = 0
        for op in ops:
            op_size = _size(op)
            if parts[-1] and size + op_size > _PART_BYTES:
                parts.append([])
                size = 0
            parts[-1].append(op)
            size += op_size
        staging = []
        for n, part in enumerate(parts):
            item = {
                **_key(iid, f"x#{tx}#p#{n:06d}"),
                **self._payload(iid, "staging", json.dumps(part, ensure_ascii=False), plan.uploads),
            }
            staging.append({"PutRequest": {"Item": item}})
        self._batch_write(staging)
        point = plan.meta["Update"]
        expression = point["UpdateExpression"].replace(
            "SET ", "SET #intent = :intent, #parts = :parts, ", 1
        )
        names = {
            **point.get("ExpressionAttributeNames", {}),
            "#intent": "intent",
            "#parts": "parts",
        }
        values = {
            **point["ExpressionAttributeValues"],
            ":intent": _s(tx),
            ":parts": _n(len(parts)),
        }
        update = {
            "Update": {
                **point,
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
        try:
            self._transact([update, *(cross or [])])
        except ClientError as exc:
            _cancelled(exc)  # anything but a cancellation: the outcome is unknown, keep all
            self._batch_write(
                [
                    {"DeleteRequest": {"Key": _key(iid, s["PutRequest"]["Item"]["sk"]["S"])}}
                    for s in staging
                ]
            )
            return False
        plan.uploads.clear()  # committed: they are in use now
        meta = self._get_meta(iid)
        if meta is not None and meta.get("intent") == _s(tx):
            self._roll_forward(iid, meta)
        return True

    def _guard(self, iid: str, tx: str, *, own: bool = False) -> _Item:
        """Condition of every roll-forward write: the intent is still ``tx``.

        ``own``: writes to the instance's own history and inbox, which must
        also stop once the second phase (deliveries, children) has begun.
        """
        condition = "#intent = :tx AND attribute_not_exists(#del)"
        if own:
            condition += " AND attribute_not_exists(#phase)"
        return {
            "ConditionCheck": {
                "TableName": self.table_name,
                "Key": _key(iid, _META),
                **_expr(ConditionExpression=condition, values={":tx": _s(tx)}),
            }
        }

    def _roll_forward(self, iid: str, meta: _Item, *, own_only: bool = False) -> None:
        """Finish the staged commit recorded in ``meta`` (steps 3 and 4 of the module doc).

        Phase 1 writes the instance's own history and inbox, then sets ``phase``;
        phase 2 creates children and delivers messages to other instances.
        Messages may be posted to an instance once it is in phase 2, so a
        roll-forward never needs another instance's phase 2: ``own_only`` stops
        after phase 1, and no chain of roll-forwards can loop.
        """
        tx = meta["intent"]["S"]
        count = int(meta["parts"]["N"])
        items = list(self._partition(iid, f"x#{tx}#p#", f"x#{tx}#p#~"))
        if len(items) == count:
            groups: list[dict[str, Any]] = []
            for item in items:
                groups.extend(json.loads(self._text(item)))
            if "phase" not in meta and not self._own_phase(iid, tx, groups):
                return
            if own_only or not self._replay_groups(iid, tx, meta, groups):
                return
        elif own_only:
            return
        self._update_meta(iid, "REMOVE #intent, #parts, #phase", "#intent = :tx", {":tx": _s(tx)})
        leftovers = list(self._partition(iid, f"x#{tx}#", f"x#{tx}#~", keys_only=True))
        self._batch_write([{"DeleteRequest": {"Key": _key(iid, i["sk"]["S"])}} for i in leftovers])
        self._forget(i["s3"]["S"] for i in leftovers if "s3" in i)

    def _own_phase(self, iid: str, tx: str, groups: list[dict[str, Any]]) -> bool:
        """Phase 1: the instance's own writes, then ``phase = 2``; False if overtaken."""
        guard = self._guard(iid, tx, own=True)
        batch: list[_Item] = []
        size = 0
        for op in [g["ops"][0] for g in groups if g["kind"] == "plain"] + [None]:
            op_size = _size(op) if op is not None else 0
            if batch and (op is None or len(batch) == _TX_ITEMS - 1 or size + op_size > _TX_BYTES):
                if not self._guarded([guard, *batch]):
                    return False
                batch, size = [], 0
            if op is not None:
                batch.append(op)
                size += op_size
        done = self._update_meta(
            iid,
            "SET #phase = :two",
            "#intent = :tx AND attribute_not_exists(#del)",
            {":two": _n(2), ":tx": _s(tx)},
        )
        return done is not None

    def _replay_groups(self, iid: str, tx: str, meta: _Item, groups: list[dict[str, Any]]) -> bool:
        """Phase 2: children and deliveries; False if the intent is gone (someone else finished)."""
        guard = self._guard(iid, tx)
        terminal = meta["st"]["S"] in _TERMINAL
        woken: list[str] = []
        for n, group in enumerate(groups):
            if group["kind"] == "plain":
                continue
            marker = {
                "Put": {
                    "TableName": self.table_name,
                    "Item": _key(iid, f"x#{tx}#d#{n:06d}"),
                    **_expr(ConditionExpression="attribute_not_exists(#sk)"),
                }
            }
            target = group["target"]
            if group["kind"] == "child":
                ops = group["ops"]
                ops[0]["Put"]["Item"]["by"] = _s(tx)
                ops[1]["Put"].update(_expr(ConditionExpression="attribute_not_exists(#sk)"))
                result = self._guarded([guard, marker, *ops])
                if result is None:
                    return False
                if result:
                    continue
                child = self._get_meta(target)
                if child is not None and child.get("by", {}).get("S") == tx:
                    continue  # created by an earlier roll-forward of this very commit
                if terminal:
                    continue
                started = event_from_json(self._text(ops[1]["Put"]["Item"]))
                assert isinstance(started, WorkflowStarted)
                taken = child_taken_message(ChildStart(target, started))
                uploads: list[str] = []
                item = self._message_item(iid, taken.id, message_to_json(taken), uploads)
                own_bump = {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _key(iid, _META),
                        **_expr(
                            UpdateExpression="SET #posted = #posted + :one",
                            ConditionExpression="#intent = :tx AND attribute_not_exists(#del)",
                            values={":one": _n(1), ":tx": _s(tx)},
                        ),
                    }
                }
                taken_marker = {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": _key(iid, f"x#{tx}#t#{n:06d}"),
                        **_expr(ConditionExpression="attribute_not_exists(#sk)"),
                    }
                }
                put = {"Put": {"TableName": self.table_name, "Item": item}}
                if self._guarded([own_bump, taken_marker, put]) is None:
                    return False
            else:
                puts = [
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": m,
                            **_expr(ConditionExpression="attribute_not_exists(#sk)"),
                        }
                    }
                    for m in group["ops"]
                ]
                for _ in range(_RETRIES):
                    result = self._guarded([guard, marker, *puts, self._bump(target, len(puts))])
                    if result is None:
                        return False
                    if result:
                        woken.append(target)
                        break
                    other = self._get_meta(target)
                    if other is None or "intent" not in other or "phase" in other:
                        break  # delivered before, or the target is gone, ended or has it
                    self._roll_forward(target, other, own_only=True)  # then deliver
        for target in dict.fromkeys(woken):
            try:
                self._wake(target)
            except Exception:
                log.exception("waking the loop of instance %r failed", target)
        return True

    def _guarded(self, ops: list[_Item]) -> bool | None:
        """Run a roll-forward transaction: True done, False a condition other than the guard failed,
        None the guard (first action) failed: the roll-forward is over."""
        for _ in range(_RETRIES):
            try:
                self._transact(ops)
                return True
            except ClientError as exc:
                reasons = _cancelled(exc)
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    return None
                if "ConditionalCheckFailed" in reasons:
                    return False
                time.sleep(0.01)  # a conflicting transaction: try again
        raise DurableError(
            "a roll-forward kept meeting conflicting transactions"
        )  # pragma: no cover

    # ------------------------------------------------------------------ post, park, wake

    def post(self, instance_id: str, message: Message) -> bool:
        uploads: list[str] = []
        payload = self._payload(instance_id, "message", message_to_json(message), uploads)
        for _ in range(_RETRIES):
            item = {**_key(instance_id, _ikey(message.id)), "ord": _s(self._ord()), **payload}
            ops = [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": item,
                        **_expr(ConditionExpression="attribute_not_exists(#sk)"),
                    }
                },
                self._bump(instance_id, 1),
            ]
            try:
                self._transact(ops)
            except ClientError as exc:
                reasons = _cancelled(exc)
                if reasons[1:2] == ["ConditionalCheckFailed"]:
                    meta = self._get_meta(instance_id)
                    if meta is None or "del" in meta:
                        self._forget(uploads)
                        raise InstanceNotFoundError(instance_id) from None
                    if meta["st"]["S"] in _TERMINAL:
                        self._forget(uploads)
                        return False
                    if "intent" in meta:
                        self._roll_forward(instance_id, meta, own_only=True)
                    continue
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    self._forget(uploads)  # already in the inbox: a redelivery
                    self._wake(instance_id)
                    return True
                continue
            self._wake(instance_id)
            return True
        raise ConflictError(instance_id, 0, None)  # pragma: no cover

    def park(self, instance_id: str, token: str) -> bool:
        """Store a Step Functions task token on the header, only if the inbox is empty.

        Returns True when stored: the next message posted to the instance takes
        it and calls the store's ``waker``. False, storing nothing, when messages
        are waiting (or the instance has ended): the caller goes on at once.
        A token stored earlier is replaced.

        Raises:
            InstanceNotFoundError: unknown id.
        """
        stored = self._update_meta(
            instance_id,
            "SET #token = :token",
            f"{_OPEN} AND #posted = #consumed AND {_NOT_TERMINAL}",
            {":token": _s(token), **_TERMINAL_VALUES},
        )
        if stored is not None:
            return True
        self._open_meta(instance_id)
        return False

    def _wake(self, instance_id: str) -> None:
        """Take the parked token of ``instance_id``, if any, and pass it to the waker."""
        if self._waker is None:
            return
        # A strongly consistent read first: most posts find no token, and a read costs a
        # fifth of the failed conditional write it saves. No wake-up is lost: this post's
        # count is already committed, so a park after this read refuses to store a token.
        seen = self._db.get_item(
            TableName=self.table_name,
            Key=_key(instance_id, _META),
            ConsistentRead=True,
            **_expr(ProjectionExpression="#token"),
        )
        if "token" not in seen.get("Item", {}):
            return
        got = self._update_meta(
            instance_id, "REMOVE #token", "attribute_exists(#token)", ReturnValues="UPDATED_OLD"
        )
        if got is None:
            return
        token = str(got["Attributes"]["token"]["S"])
        try:
            self._waker(token)
        except BaseException:
            with contextlib.suppress(ClientError):  # put it back, unless a newer park stored one
                self._db.update_item(
                    TableName=self.table_name,
                    Key=_key(instance_id, _META),
                    **_expr(
                        UpdateExpression="SET #token = :token",
                        ConditionExpression="attribute_exists(#pk) AND attribute_not_exists(#token)",
                        values={":token": _s(token)},
                    ),
                )
            raise

    # ------------------------------------------------------------------ listing

    def _headers_in(self, status: Status, workflow: str | None, limit: int) -> list[_Item]:
        kwargs = _expr(
            KeyConditionExpression="#st = :st",
            FilterExpression="#wf = :wf" if workflow is not None else None,
            values={
                ":st": _s(status.value),
                **({":wf": _s(workflow)} if workflow is not None else {}),
            },
        )
        found: list[_Item] = []
        for item in self._query(IndexName=GSI_NAME, ScanIndexForward=False, **kwargs):
            if "del" in item:
                continue
            found.append(item)
            if len(found) >= limit:
                break
        return found

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        if limit <= 0:
            return []
        wanted = statuses(status) or list(Status)
        found: list[_Item] = []
        for st in dict.fromkeys(wanted):
            found.extend(self._headers_in(st, workflow, limit))
        found.sort(key=lambda i: (str(i["ca"]["S"]), str(i["pk"]["S"])), reverse=True)
        headers = []
        for item in found[:limit]:
            try:
                headers.append(self._header(item))
            except _Gone:  # the index lags a commit: read the header itself
                header = self.get(str(item["pk"]["S"]))
                if header is not None:
                    headers.append(header)
        return headers

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        if limit <= 0:
            return []
        ids = [str(i["pk"]["S"]) for i in self._headers_in(Status.PENDING, None, limit)]
        kwargs = _expr(
            KeyConditionExpression="#st = :st",
            FilterExpression="#posted > #consumed OR #wake <= :now OR attribute_exists(#intent)",
            values={":st": _s(Status.RUNNING.value), ":now": _s(_ts(now))},
        )
        for item in self._query(IndexName=GSI_NAME, **kwargs):
            if len(ids) >= limit:
                break
            if "del" not in item:
                ids.append(str(item["pk"]["S"]))
        return list(dict.fromkeys(ids))[:limit]

    # ------------------------------------------------------------------ delete, close

    def delete(self, instance_id: str) -> bool:
        marked = self._update_meta(
            instance_id, "SET #del = :d", _OPEN, {":d": _s(_ts(datetime.now(UTC)))}
        )
        if marked is None:
            meta = self._get_meta(instance_id)
            if meta is not None and "del" in meta:
                self._purge(instance_id)  # finish what a crashed delete began
            return False
        self._purge(instance_id)
        return True

    def _purge(self, instance_id: str) -> None:
        """Remove every item of an instance marked ``del``, the header last, and its S3 objects."""
        items = list(
            self._query(
                ConsistentRead=True,
                **_expr(
                    KeyConditionExpression="#pk = :pk",
                    ProjectionExpression="#sk, #s3",
                    values={":pk": _s(instance_id)},
                ),
            )
        )
        rest = [i for i in items if i["sk"]["S"] != _META]
        self._batch_write(
            [{"DeleteRequest": {"Key": _key(instance_id, i["sk"]["S"])}} for i in rest]
        )
        try:
            self._db.delete_item(
                TableName=self.table_name,
                Key=_key(instance_id, _META),
                **_expr(ConditionExpression="attribute_exists(#del)"),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        self._forget(i["s3"]["S"] for i in items if "s3" in i)

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client (local runtimes keep their heartbeat items with it)."""
        return self._db

    def close(self) -> None:
        """Nothing to release (boto3 clients close with the process)."""


def _fits(ops: list[_Item]) -> bool:
    """Whether ``ops`` can be one TransactWriteItems."""
    return len(ops) <= _TX_ITEMS and sum(_size(op) for op in ops) <= _TX_BYTES


def _same(before: _Item, after: _Item) -> bool:
    return all(before.get(k) == after.get(k) for k in ("ver", "inc", "del"))
