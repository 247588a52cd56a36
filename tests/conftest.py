from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from durable.store import HistoryStore, MemoryStore, SQLiteStore


@contextmanager
def _memory_store(tmp_path: Path) -> Iterator[HistoryStore]:
    yield MemoryStore()


@contextmanager
def _sqlite_store(tmp_path: Path) -> Iterator[HistoryStore]:
    store = SQLiteStore(tmp_path / "durable.db")
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _dynamodb_store(tmp_path: Path) -> Iterator[HistoryStore]:
    import boto3
    from moto import mock_aws

    from durable.store.dynamodb import DynamoDBStore, create_table
    from tests.moto_dynamodb import serialized_moto_dynamodb

    with mock_aws(), serialized_moto_dynamodb():
        client = boto3.client("dynamodb", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        create_table(client, "durable")
        s3.create_bucket(Bucket="durable-payloads")
        store = DynamoDBStore("durable", client=client, s3_client=s3, bucket="durable-payloads")
        try:
            yield store
        finally:
            store.close()


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[HistoryStore]]] = {
    "memory": _memory_store,
    "sqlite": _sqlite_store,
    "dynamodb": _dynamodb_store,
}
"""Every store the conformance suite runs against: a name and a fresh, empty store.

A new store adds one entry (e.g. ``"dynamodb"``: a moto-backed table, opened
inside ``mock_aws()``); tests/test_store_conformance.py then runs against it.
"""


_SAVED = pytest.StashKey[list[str]]()
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"
"""Where tests leave files for people to look at (screenshots); git-ignored."""


@pytest.fixture(scope="session")
def artifact(pytestconfig: pytest.Config) -> Callable[[str], Path]:
    """``artifact("dir/name.png")``: a path under ``.artifacts/``, listed at the end of the run."""
    saved = pytestconfig.stash.setdefault(_SAVED, [])

    def path(name: str) -> Path:
        target = ARTIFACTS / name
        target.parent.mkdir(parents=True, exist_ok=True)
        saved.append(str(target))
        return target

    return path


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    saved = [p for p in config.stash.get(_SAVED, []) if Path(p).exists()]
    if saved:
        terminalreporter.section("files saved by tests")
        for path in sorted(set(saved)):
            terminalreporter.write_line(path)


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryStore]:
    """A fresh, empty store of each kind in ``STORE_FACTORIES``, closed afterwards."""
    with STORE_FACTORIES[request.param](tmp_path) as opened:
        yield opened
