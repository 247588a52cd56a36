"""Worker processes for the kill and multi-worker tests (run with ``python -m``).

``python -m tests.reliability.procs DB STATS EXPECTED`` runs a real
:class:`~durable.runtime.local.Runtime` on the SQLite file ``DB`` (through a
counting, never-failing :class:`~tests.reliability.harness.FaultyStore`)
until ``EXPECTED`` instances exist and all have ended, then writes its
counters (loads, commits, conflicts, posts) to ``STATS`` as JSON. Its
activities append ``"<key> <pid>"`` to the log file named in the instance's
input when they start.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from durable import Context, Runtime, SQLiteStore, Status, activity, workflow
from tests.reliability.harness import FaultyStore


@activity(name="rel_logged_step")
def rel_logged_step(key: str, log: str, seconds: float) -> str:
    with open(log, "a") as f:  # one short line per run, appended atomically
        f.write(f"{key} {os.getpid()}\n")
    time.sleep(seconds)
    return key


@workflow(name="rel_pipeline")
def rel_pipeline(ctx: Context, job: dict[str, Any]) -> Generator[Any, Any, list[str]]:
    """Two steps in a row, three in parallel, one more: six activities."""
    log, seconds = job["log"], job["seconds"]
    iid = ctx.instance_id
    out = []
    for i in range(2):
        out.append((yield ctx.call(rel_logged_step, f"{iid}/{i}", log, seconds)))
    out += yield ctx.all([ctx.call(rel_logged_step, f"{iid}/{i}", log, seconds) for i in (2, 3, 4)])
    out.append((yield ctx.call(rel_logged_step, f"{iid}/5", log, seconds)))
    return out


def expected_result(instance_id: str) -> list[str]:
    return [f"{instance_id}/{i}" for i in range(6)]


def main(db: str, stats: str, expected: int) -> None:
    inner = SQLiteStore(db)
    view = FaultyStore(inner, None)
    runtime = Runtime(view, workflows=(rel_pipeline,))
    try:
        while True:
            headers = inner.list_instances(limit=1_000_000)
            done = [h for h in headers if h.status.is_terminal]
            if len(headers) >= expected and len(done) == len(headers):
                break
            if any(h.status == Status.STUCK for h in headers):
                break
            time.sleep(0.1)
    finally:
        runtime.close()
        inner.close()
    Path(stats).write_text(json.dumps({"pid": os.getpid(), **view.calls}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
