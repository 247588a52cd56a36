"""Which workers are alive on a store: a lock file per worker, held while it runs.

A :class:`~durable.runtime.local.Runtime` on a SQLite file creates
``<file>.workers/<pid>-<random>`` and holds an exclusive ``flock`` on it until
it closes. The kernel releases the lock when the process dies, however it
dies (SIGKILL included), so another worker that can take the lock knows the
owner is gone, deletes the file and reports the death. On a DynamoDB table
every worker keeps a heartbeat item instead (see
:mod:`durable.runtime.presence_dynamodb`); other stores without a file
(memory) count the runtimes of this process only. :func:`open_presence`
picks the kind by the store.

This is what lets a worker tell an attempt that another live worker is
running (leave it alone) from one abandoned by a dead worker (run it again).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: every worker counts as alone
    fcntl = None  # type: ignore[assignment]

_LOCAL_LOCK = threading.Lock()
_LOCAL: dict[int, int] = {}
"""id(store) -> live runtimes on it in this process (stores without a file)."""
_LOCAL_DEATHS: dict[int, int] = {}
"""id(store) -> runtimes on it that closed abandoning attempts (counted as deaths)."""


class WorkerPresence(Protocol):
    """What a Runtime needs to know about the other workers on its store."""

    def refresh(self) -> None:
        """Show that this worker is still alive (called often; cheap when nothing is due)."""
        ...

    def others(self) -> tuple[int, int]:
        """``(alive, died)``: other workers alive now, and dead ones found (and forgotten) now."""
        ...

    def close(self, *, abandoned: bool = False) -> None:
        """End this worker's presence (``abandoned``: it leaves attempts for others to adopt)."""
        ...


def open_presence(store: Any) -> WorkerPresence:
    """This worker's presence on ``store``: a heartbeat item on a DynamoDB store (one with
    ``table_name`` and ``client``, as :class:`~durable.store.dynamodb.DynamoDBStore`),
    otherwise a lock file next to its file, or a count in this process."""
    table = getattr(store, "table_name", None)
    client = getattr(store, "client", None)
    if isinstance(table, str) and client is not None:
        from durable.runtime.presence_dynamodb import DynamoDBPresence

        return DynamoDBPresence(client, table)
    return Presence(store)


class Presence:
    """This worker's presence on ``store``; :meth:`close` ends it.

    A store kept in a file names it in a ``path`` attribute (as
    :class:`~durable.store.sqlite.SQLiteStore` does); a wrapper around such a
    store must pass its ``path`` on, or its runtime counts only its own process.
    """

    def __init__(self, store: Any) -> None:
        path = getattr(store, "path", None)
        self._dir: Path | None = None
        self._fd: int | None = None
        self._file: Path | None = None
        self._key = id(store)
        self._closed = False
        self._deaths_seen = 0
        if isinstance(path, str) and path != ":memory:" and fcntl is not None:
            self._dir = Path(path + ".workers")
            self._dir.mkdir(parents=True, exist_ok=True)
            name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            hidden = self._dir / f".{name}"  # not looked at by others until it is locked
            self._fd = os.open(hidden, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._file = self._dir / name
            os.rename(hidden, self._file)
        else:
            with _LOCAL_LOCK:
                _LOCAL[self._key] = _LOCAL.get(self._key, 0) + 1
                self._deaths_seen = _LOCAL_DEATHS.get(self._key, 0)

    def refresh(self) -> None:
        """Nothing to do: a held lock needs no refreshing."""

    def others(self) -> tuple[int, int]:
        """``(alive, died)``: other workers alive now, and dead ones found (and forgotten) now."""
        if self._dir is None:
            with _LOCAL_LOCK:
                deaths = _LOCAL_DEATHS.get(self._key, 0)
                died, self._deaths_seen = deaths - self._deaths_seen, deaths
                return _LOCAL.get(self._key, 1) - 1, died
        assert fcntl is not None
        alive = died = 0
        for entry in list(self._dir.iterdir()):
            if entry == self._file or entry.name.startswith("."):
                continue
            try:
                fd = os.open(entry, os.O_RDWR)
            except OSError:
                continue  # deleted meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                alive += 1  # its owner holds the lock: alive
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
                    died += 1
            finally:
                os.close(fd)
        return alive, died

    def close(self, *, abandoned: bool = False) -> None:
        """End the presence; ``abandoned``: attempts were left running, so the other
        workers are told it died (and adopt them) rather than that it left."""
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            assert self._file is not None
            if not abandoned:
                with contextlib.suppress(OSError):
                    self._file.unlink()
            os.close(self._fd)  # releases the lock: a file left behind reads as a death
            self._fd = None
        elif self._dir is None:
            with _LOCAL_LOCK:
                left = _LOCAL.get(self._key, 1) - 1
                if left > 0:
                    _LOCAL[self._key] = left
                    if abandoned:
                        _LOCAL_DEATHS[self._key] = _LOCAL_DEATHS.get(self._key, 0) + 1
                else:  # nobody left to tell
                    _LOCAL.pop(self._key, None)
                    _LOCAL_DEATHS.pop(self._key, None)
