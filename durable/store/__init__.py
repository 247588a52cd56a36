"""Stores of instance histories: the protocol, and how to open one from a URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

from durable.errors import ConfigurationError
from durable.store.base import HistoryStore, Snapshot
from durable.store.memory import MemoryStore
from durable.store.sqlite import SQLiteStore

DEFAULT_DB = Path(".durable") / "durable.db"
"""Where the CLI keeps its SQLite store unless told otherwise."""

__all__ = ["DEFAULT_DB", "HistoryStore", "MemoryStore", "SQLiteStore", "Snapshot", "open_store"]


def open_store(spec: HistoryStore | str | Path | None) -> HistoryStore:
    """A store from an object, a URL or a path.

    ``None`` or ``"memory://"``: a fresh in-memory store. ``"sqlite:///path/to.db"``
    (options: ``?synchronous=NORMAL``) or a plain path: a SQLite file.
    ``"dynamodb://TABLE"`` (options: ``?region=eu-west-1&bucket=payload-bucket``):
    an existing DynamoDB table, large payloads in the bucket.
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, Path):
        return SQLiteStore(spec)
    if not isinstance(spec, str):
        if isinstance(spec, HistoryStore):
            return spec
        raise ConfigurationError(f"not a store, store URL or path: {spec!r}")
    if spec in ("memory://", "memory"):
        return MemoryStore()
    if spec.startswith("sqlite:"):
        url = urlparse(spec)
        path = url.path if url.netloc == "" else f"{url.netloc}{url.path}"
        if spec.startswith("sqlite:///"):
            path = spec[len("sqlite:///") :].split("?", 1)[0]
        if not path:
            raise ConfigurationError(f"store URL {spec!r} names no file (sqlite:///path/to.db)")
        options = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ConfigurationError(
                f"unknown SQLite store option(s) {sorted(unknown)} in {spec!r}"
            )
        try:
            return SQLiteStore(path, synchronous=options.get("synchronous", "FULL"))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (in store URL {spec!r})") from None
    if spec.startswith("dynamodb:"):
        return _dynamodb(spec)
    if "://" in spec:
        raise ConfigurationError(
            f"unknown store URL {spec!r}; use memory://, sqlite:///path/to.db or dynamodb://TABLE"
        )
    return SQLiteStore(spec)


def _dynamodb(spec: str) -> HistoryStore:
    """``dynamodb://TABLE?region=R&bucket=B`` (boto3 is imported only here)."""
    url = urlparse(spec)
    table = url.netloc or url.path.lstrip("/")
    if not table:
        raise ConfigurationError(f"store URL {spec!r} names no table (dynamodb://TABLE)")
    options = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    unknown = set(options) - {"region", "bucket"}
    if unknown:
        raise ConfigurationError(f"unknown DynamoDB store option(s) {sorted(unknown)} in {spec!r}")
    import boto3

    from durable.store.dynamodb import DynamoDBStore

    region = options.get("region") or None
    bucket = options.get("bucket") or None
    return DynamoDBStore(
        table,
        client=boto3.client("dynamodb", region_name=region),
        s3_client=boto3.client("s3", region_name=region) if bucket else None,
        bucket=bucket,
    )
