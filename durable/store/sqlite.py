"""The embedded SQLite store: the default for local runs, tests and single-machine production.

One file (default ``.durable/durable.db``) in WAL mode. Every commit is one
``BEGIN IMMEDIATE`` transaction conditioned on the header version, so several
processes may share the file: a writer that lost the race gets
:class:`~durable.errors.ConflictError` and nothing of its step is written.

Durability: ``synchronous=FULL`` by default, so a committed step survives an
OS crash or power loss; ``sqlite:///path?synchronous=NORMAL`` trades the last
few commits on power loss (never on a process crash) for throughput.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from durable.codec import ErrorInfo
from durable.errors import ConfigurationError, ConflictError, InstanceNotFoundError
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
from durable.replay import Decision
from durable.store.base import (
    Snapshot,
    child_taken_message,
    header_changes,
    header_for,
    statuses,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id   TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    status        TEXT NOT NULL,
    run           INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    input         TEXT,
    output        TEXT,
    error         TEXT,
    custom_status TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    wake_at       REAL,
    parent_id     TEXT
);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances (status, workflow, created_at);
CREATE INDEX IF NOT EXISTS instances_by_wake ON instances (wake_at) WHERE wake_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    run         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_id, run, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    message     TEXT NOT NULL,
    UNIQUE (instance_id, message_id)
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox (instance_id, position);
"""

_SCHEMA_VERSION = 1
"""Stored in the file's ``user_version``; a file from a newer ``durable`` is refused."""

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


class SQLiteStore:
    """A :class:`~durable.store.base.HistoryStore` in one SQLite file.

    Args:
        path: the database file (its folder is created); ``":memory:"`` for a private one.
        synchronous: SQLite's ``synchronous`` pragma: ``"FULL"`` (default) or ``"NORMAL"``.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}"
            )
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={sync}")
        self._db.execute("PRAGMA busy_timeout=30000")
        try:
            self._upgrade()
        except BaseException:
            self._db.close()
            raise

    def _upgrade(self) -> None:
        """Create the tables, or bring those of an older file up to date (once, in one transaction)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found > _SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self.path} was written by a newer version of durable"
                    f" (schema {found}, this one reads up to {_SCHEMA_VERSION})"
                )
            old_inbox = (
                found == 0
                and db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'inbox'"
                ).fetchone()
            )
            if old_inbox:  # schema 0: message ids were unique across all instances
                db.execute("ALTER TABLE inbox RENAME TO inbox_0")
                db.execute("DROP INDEX IF EXISTS inbox_by_instance")
            for statement in _SCHEMA.split(";"):
                db.execute(statement)
            if old_inbox:
                db.execute(
                    "INSERT INTO inbox (position, instance_id, message_id, message)"
                    " SELECT position, instance_id, message_id, message FROM inbox_0"
                )
                db.execute("DROP TABLE inbox_0")
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @property
    def synchronous(self) -> str:
        """The ``synchronous`` level the connection runs with (``"FULL"``, ``"NORMAL"``, ...)."""
        with self._lock:
            level = self._db.execute("PRAGMA synchronous").fetchone()[0]
        return _SYNCHRONOUS[level]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # ------------------------------------------------------------------ writes

    def create(self, instance_id: str, started: WorkflowStarted) -> bool:
        with self._write() as db:
            return self._create(db, instance_id, started)

    def _create(self, db: sqlite3.Connection, instance_id: str, started: WorkflowStarted) -> bool:
        header = header_for(instance_id, started)
        cursor = db.execute(
            "INSERT OR IGNORE INTO instances (instance_id, workflow, status, run, version, input,"
            " created_at, updated_at, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                instance_id,
                header.workflow,
                header.status.value,
                header.run,
                header.version,
                _json(header.input),
                _ts(header.created_at),
                _ts(header.updated_at),
                header.parent_id,
            ),
        )
        if cursor.rowcount == 0:
            return False
        db.execute(
            "INSERT INTO history (instance_id, run, seq, event) VALUES (?, ?, ?, ?)",
            (instance_id, started.run, started.seq, event_to_json(started)),
        )
        return True

    def commit(
        self,
        decision: Decision,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        iid = decision.instance_id
        with self._write() as db:
            changes = header_changes(decision, expected_version)
            status: Status = changes["status"]
            columns = {
                "status": status.value,
                "version": changes["version"],
                "output": _json(changes["output"]),
                "error": decision.error.model_dump_json() if decision.error else None,
                "custom_status": _json(changes["custom_status"]),
                "updated_at": _ts(decision.at),
                "wake_at": _ts(changes["wake_at"]) if changes["wake_at"] else None,
            }
            if decision.next_run is not None:
                columns["run"] = decision.next_run.run
                columns["input"] = _json(decision.next_run.input)
            assignments = ", ".join(f"{name} = ?" for name in columns)
            updated = db.execute(
                f"UPDATE instances SET {assignments} WHERE instance_id = ? AND version = ?",
                (*columns.values(), iid, expected_version),
            )
            if updated.rowcount == 0:
                header = self._header(db, iid)
                if header is None:
                    raise InstanceNotFoundError(iid)
                raise ConflictError(iid, expected_version, header.version)
            db.executemany(
                "INSERT INTO history (instance_id, run, seq, event) VALUES (?, ?, ?, ?)",
                [(iid, decision.run, e.seq, event_to_json(e)) for e in decision.events],
            )
            if decision.next_run is not None:
                db.execute(
                    "INSERT INTO history (instance_id, run, seq, event) VALUES (?, ?, ?, ?)",
                    (
                        iid,
                        decision.next_run.run,
                        decision.next_run.seq,
                        event_to_json(decision.next_run),
                    ),
                )
            if status.is_terminal:
                db.execute("DELETE FROM inbox WHERE instance_id = ?", (iid,))
            elif decision.consumed:
                db.executemany(
                    "DELETE FROM inbox WHERE instance_id = ? AND message_id = ?",
                    [(iid, m) for m in decision.consumed],
                )
            for child in decision.children:
                if (
                    not self._create(db, child.instance_id, child.started)
                    and not status.is_terminal
                ):
                    self._insert_message(db, iid, child_taken_message(child))
            for outgoing in decision.messages:
                self._post(db, outgoing.instance_id, outgoing.message)
            if on_ready is not None:
                on_ready()  # all written and the write lock held: only COMMIT (the fsync) is left
            version: int = changes["version"]
            return version

    def post(self, instance_id: str, message: Message) -> bool:
        with self._write() as db:
            status = db.execute(
                "SELECT status FROM instances WHERE instance_id = ?", (instance_id,)
            ).fetchone()
            if status is None:
                raise InstanceNotFoundError(instance_id)
            return self._post(db, instance_id, message)

    def _post(self, db: sqlite3.Connection, instance_id: str, message: Message) -> bool:
        row = db.execute(
            "SELECT status FROM instances WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        if row is None or Status(row[0]).is_terminal:
            return False
        self._insert_message(db, instance_id, message)
        return True

    def _insert_message(self, db: sqlite3.Connection, instance_id: str, message: Message) -> None:
        db.execute(
            "INSERT OR IGNORE INTO inbox (instance_id, message_id, message) VALUES (?, ?, ?)",
            (instance_id, message.id, message_to_json(message)),
        )

    def delete(self, instance_id: str) -> bool:
        with self._write() as db:
            deleted = db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
            db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
            db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))
            return deleted.rowcount > 0

    # ------------------------------------------------------------------ reads

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        with self._read() as db:
            header = self._header(db, instance_id)
            if header is None:
                raise InstanceNotFoundError(instance_id)
            history = self._history(db, instance_id, header.run, after)
            inbox = [
                message_from_json(row[0])
                for row in db.execute(
                    "SELECT message FROM inbox WHERE instance_id = ? ORDER BY position",
                    (instance_id,),
                )
            ]
        return Snapshot(header, history, inbox)

    def get(self, instance_id: str) -> InstanceStatus | None:
        with self._read() as db:
            return self._header(db, instance_id)

    def history(self, instance_id: str, run: int | None = None) -> list[Event]:
        with self._read() as db:
            header = self._header(db, instance_id)
            if header is None:
                raise InstanceNotFoundError(instance_id)
            return self._history(db, instance_id, run if run is not None else header.run)

    def list_instances(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        workflow: str | None = None,
        limit: int = 100,
    ) -> list[InstanceStatus]:
        clauses: list[str] = []
        params: list[Any] = []
        wanted = statuses(status)
        if wanted is not None:
            clauses.append(f"status IN ({', '.join('?' for _ in wanted)})")
            params.extend(s.value for s in wanted)
        if workflow is not None:
            clauses.append("workflow = ?")
            params.append(workflow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM instances {where}"
                " ORDER BY created_at DESC, instance_id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [_row_to_header(row) for row in rows]

    def ready(self, now: datetime, limit: int = 100) -> list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT instance_id FROM instances WHERE status = 'PENDING'"
                " OR (status = 'RUNNING' AND wake_at <= ?)"
                " UNION SELECT DISTINCT i.instance_id FROM inbox i JOIN instances s"
                " ON s.instance_id = i.instance_id WHERE s.status IN ('PENDING', 'RUNNING')"
                " LIMIT ?",
                (_ts(now), limit),
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _header(self, db: sqlite3.Connection, instance_id: str) -> InstanceStatus | None:
        row = db.execute(
            f"SELECT {_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        return _row_to_header(row) if row is not None else None

    def _history(
        self, db: sqlite3.Connection, instance_id: str, run: int, after: int | None = None
    ) -> list[Event]:
        if after is None:
            after = -1  # every seq
        return [
            event_from_json(row[0])
            for row in db.execute(
                "SELECT event FROM history WHERE instance_id = ? AND run = ? AND seq > ?"
                " ORDER BY seq",
                (instance_id, run, after),
            )
        ]


_COLUMNS = (
    "instance_id, workflow, status, run, version, input, output, error, custom_status,"
    " created_at, updated_at, wake_at, parent_id"
)


def _row_to_header(row: tuple[Any, ...]) -> InstanceStatus:
    (iid, wf, status, run, version, inp, out, err, custom, created, updated, wake, parent) = row
    return InstanceStatus(
        instance_id=iid,
        workflow=wf,
        status=Status(status),
        run=run,
        version=version,
        input=json.loads(inp) if inp is not None else None,
        output=json.loads(out) if out is not None else None,
        error=ErrorInfo.model_validate_json(err) if err is not None else None,
        custom_status=json.loads(custom) if custom is not None else None,
        created_at=_dt(created),
        updated_at=_dt(updated),
        wake_at=_dt(wake) if wake is not None else None,
        parent_id=parent,
    )
