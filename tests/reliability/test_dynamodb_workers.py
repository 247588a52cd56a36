"""Eight orchestrator threads, one DynamoDB table (moto): every instance completes once.

The default run drives 60 instances (about 20 s); ``REL_DDB_INSTANCES=200``
drives the 200 of the reliability issue (about 4 minutes on moto, whose
queries slow down as the table grows: 246 s, 3.00 commits and 9.3 loads per
instance, measured 2026-12-05).

Eight :class:`Runtime` objects share one :class:`DynamoDBStore`, each with its
own scheduler thread, as eight orchestrators would. Every instance completes
with the right result, every history is valid (no step committed twice, every
completion recorded once), every activity ran exactly once (no crash here, so
at-least-once must be exactly once), and no scheduler spins: loads per
instance stay bounded. The figures are printed (``-s``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from durable import Context, Runtime, Status, activity, workflow
from durable.store.base import HistoryStore, Snapshot
from tests.reliability.harness import check_history

ORCHESTRATORS = 8
INSTANCES = int(os.environ.get("REL_DDB_INSTANCES", "60"))
WAIT = 300.0

_runs: Counter[str] = Counter()
_runs_lock = threading.Lock()


@activity(name="rel_ddb.step")
def rel_ddb_step(key: str) -> str:
    with _runs_lock:
        _runs[key] += 1
    return key


@workflow(name="rel_ddb_pipeline")
def rel_ddb_pipeline(ctx: Context, n: int) -> Generator[Any, Any, list[str]]:
    iid = ctx.instance_id
    first = yield ctx.call(rel_ddb_step, f"{iid}/0")
    rest = yield ctx.all([ctx.call(rel_ddb_step, f"{iid}/{i}") for i in (1, 2)])
    return [first, *rest]


class _CountingStore:
    """Counts loads and commits on the way to the real store (the AWS boundary is moto)."""

    def __init__(self, inner: HistoryStore) -> None:
        self._inner = inner
        self.loads = 0
        self.commits = 0
        self._lock = threading.Lock()

    def load(self, instance_id: str, *, after: int | None = None) -> Snapshot:
        with self._lock:
            self.loads += 1
        return self._inner.load(instance_id, after=after)

    def commit(
        self,
        decision: Any,
        *,
        expected_version: int,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        version = self._inner.commit(decision, expected_version=expected_version, on_ready=on_ready)
        with self._lock:
            self.commits += 1
        return version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def dynamodb_store() -> Iterator[HistoryStore]:
    from tests.conftest import STORE_FACTORIES

    with STORE_FACTORIES["dynamodb"](None) as store:  # type: ignore[arg-type]
        yield store


@pytest.mark.timeout(max(300, 4 * INSTANCES))  # moto slows down as the table grows
def test_eight_orchestrators_on_one_table_complete_every_instance_once(
    dynamodb_store: HistoryStore,
) -> None:
    _runs.clear()
    store = _CountingStore(dynamodb_store)
    runtimes = [
        Runtime(store, workflows=(rel_ddb_pipeline,), max_workers=2)  # type: ignore[arg-type]
        for _ in range(ORCHESTRATORS)
    ]
    ids = [f"d{i:03d}" for i in range(INSTANCES)]
    started = time.monotonic()
    try:
        for i, iid in enumerate(ids):
            runtimes[i % ORCHESTRATORS].start(rel_ddb_pipeline, i, instance_id=iid)
        for iid in ids:
            assert runtimes[0].wait(iid, timeout=WAIT) == [f"{iid}/{k}" for k in range(3)]
    finally:
        for runtime in runtimes:
            runtime.close()
    seconds = time.monotonic() - started
    for iid in ids:
        header = dynamodb_store.get(iid)
        assert header is not None and header.status == Status.COMPLETED
        check_history(dynamodb_store.history(iid), iid)
    assert set(_runs) == {f"{iid}/{k}" for iid in ids for k in range(3)}
    assert max(_runs.values()) == 1, [k for k, n in _runs.items() if n > 1][:10]
    loads_per_instance = store.loads / INSTANCES
    commits_per_instance = store.commits / INSTANCES
    print(
        f"\n{ORCHESTRATORS} orchestrators, {INSTANCES} instances on moto DynamoDB: "
        f"{seconds:.1f}s, {commits_per_instance:.2f} commits and "
        f"{loads_per_instance:.2f} loads per instance"
    )
    assert commits_per_instance <= 6  # start, 3 results (2 may share a step), end: no repeats
    assert loads_per_instance <= 40  # losers of a race reload; nobody spins
