"""Two fixes to moto's in-process DynamoDB, so that it behaves (and performs) like DynamoDB.

Only the emulator is changed, never `durable`'s code:

* moto checks a condition and writes without a lock, so two threads can both
  pass ``ver = :v``; DynamoDB serializes writes to an item. Every backend call
  here runs under one lock.
* moto backs up the whole table (``copy.deepcopy``) once per action of every
  ``TransactWriteItems``, which makes a transaction cost O(actions x table
  size). Here a transaction backs up only the items it touches and restores
  them if it is cancelled, as moto's own rollback would.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class _NoTableCopy:
    """Stands in for the ``copy`` module inside moto's transaction: tables are not copied."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, obj: Any, memo: Any = None) -> Any:
        if isinstance(obj, self._table_type):
            return obj
        return copy.deepcopy(obj, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@contextmanager
def serialized_moto_dynamodb() -> Iterator[None]:
    """Apply both fixes while the context is open (use inside or around ``mock_aws()``)."""
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    lock = threading.RLock()
    saved = {
        name: fn
        for name, fn in vars(DynamoDBBackend).items()
        if callable(fn) and not name.startswith("_")
    }
    real_transact = saved["transact_write_items"]

    def transact(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            name = op.get("TableName")
            if name not in self.tables:
                continue
            table = self.tables[name]
            if "Item" in op:
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            current = self.get_item(name, key)
            backups.append(
                (name, key, None if current is None else current.to_json()["Attributes"])
            )
        models.copy = _NoTableCopy(Table)  # type: ignore[attr-defined,assignment]
        try:
            real_transact(self, transact_items)
        except Exception:
            for name, key, attrs in reversed(backups):
                if attrs is None:
                    if self.get_item(name, key) is not None:
                        self.delete_item(name, key)
                else:
                    self.put_item(name, attrs)
            raise
        finally:
            models.copy = copy  # type: ignore[attr-defined]

    def serialized(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return fn(*args, **kwargs)

        return call

    for name, fn in saved.items():
        setattr(DynamoDBBackend, name, serialized(transact if fn is real_transact else fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(DynamoDBBackend, name, fn)
