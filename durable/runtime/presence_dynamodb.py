"""Which workers are alive on a DynamoDB table: one heartbeat item per worker.

A :class:`~durable.runtime.local.Runtime` on a
:class:`~durable.store.dynamodb.DynamoDBStore` puts an item in the store's
table, partition key :data:`WORKERS_PK`, sort key its worker id, with
``expires_at`` (epoch seconds) ``ttl`` seconds ahead. Its scheduler thread
puts it again every ``refresh`` seconds; :meth:`DynamoDBPresence.close`
deletes it, or, when the runtime abandons activity attempts, marks it expired
at once so that the other workers adopt them at their next look.

Another worker's item that has expired is a dead worker (its process stopped
beating, however it died): the first worker to see it deletes it, on
condition that it still carries the expiry it read (so one death is reported
once, and a worker that beat again meanwhile is not buried), and reports the
death. The stack's table has DynamoDB TTL on ``expires_at``, which removes
items nobody looked at eventually; readers never rely on it.

The items cannot be mistaken for instances: their partition key holds a
control character, which instance ids never do
(:func:`durable.runtime.start.check_instance_id`), and they carry no ``st``,
so the ``by_status`` index that ``list_instances`` and ``ready`` read never
holds them.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

WORKERS_PK = "\x1fdurable-workers"
"""Partition key of the heartbeat items (no instance id contains a control character)."""
TTL_SECONDS = 30.0
"""A worker whose item was not refreshed for this long counts as dead."""
REFRESH_SECONDS = 10.0
"""How often a live worker puts its item again."""

log = logging.getLogger("durable.runtime")


class DynamoDBPresence:
    """This worker's heartbeat item in ``table_name``; :meth:`close` ends it.

    Args:
        client: a boto3 DynamoDB client.
        table_name: the store's table.
        ttl: seconds a heartbeat stays valid.
        refresh: seconds between heartbeats (:meth:`refresh` does nothing sooner).
        clock: epoch seconds now (injectable for tests).
        worker_id: this worker's sort key (default: host, pid and a random part).
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        ttl: float = TTL_SECONDS,
        refresh: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.time,
        worker_id: str | None = None,
    ) -> None:
        if refresh >= ttl:
            raise ValueError(f"refresh ({refresh}s) must be shorter than ttl ({ttl}s)")
        self._db = client
        self._table = table_name
        self._ttl = ttl
        self._refresh = refresh
        self._clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._closed = False
        self._beat_at = -math.inf
        self._beat()

    def _key(self, worker_id: str) -> dict[str, Any]:
        return {"pk": {"S": WORKERS_PK}, "sk": {"S": worker_id}}

    def _beat(self) -> None:
        now = self._clock()
        self._db.put_item(
            TableName=self._table,
            Item={
                **self._key(self.worker_id),
                "expires_at": {"N": str(math.ceil(now + self._ttl))},
            },
        )
        self._beat_at = now

    def refresh(self) -> None:
        """Put the heartbeat again if ``refresh`` seconds passed since the last one."""
        with self._lock:
            if not self._closed and self._clock() - self._beat_at >= self._refresh:
                self._beat()

    def others(self) -> tuple[int, int]:
        """``(alive, died)``: other workers beating now, and dead ones found (and removed) now."""
        now = self._clock()
        alive = died = 0
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": "pk"},
            "ExpressionAttributeValues": {":pk": {"S": WORKERS_PK}},
        }
        while True:
            page = self._db.query(**kwargs)
            for item in page.get("Items", []):
                worker = str(item["sk"]["S"])
                if worker == self.worker_id:
                    continue
                expires = item.get("expires_at", {"N": "0"})
                if float(expires["N"]) > now:
                    alive += 1
                elif self._bury(worker, expires):
                    died += 1
            if "LastEvaluatedKey" not in page:
                return alive, died
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _bury(self, worker: str, expires: dict[str, str]) -> bool:
        """Delete a dead worker's item if it still has the expiry read; whether this did it."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=self._key(worker),
                ConditionExpression="#e = :e",
                ExpressionAttributeNames={"#e": "expires_at"},
                ExpressionAttributeValues={":e": expires},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False  # it beat again, or another worker reported the death first
            raise
        return True

    def close(self, *, abandoned: bool = False) -> None:
        """End the presence; ``abandoned``: attempts were left running, so the item is left
        expired (the other workers find a death and adopt them) rather than deleted."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if abandoned:
                self._db.put_item(
                    TableName=self._table,
                    Item={**self._key(self.worker_id), "expires_at": {"N": "0"}},
                )
            else:
                self._db.delete_item(TableName=self._table, Key=self._key(self.worker_id))
        except (ClientError, BotoCoreError):  # the item expires by itself
            log.warning("could not end this worker's presence item", exc_info=True)
