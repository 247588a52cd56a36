"""Event delivery: 1,000 events from 8 threads to one waiting instance, exactly once, in order.

The workflow waits for 250 events of each of 4 names, one name after the
other, so most events arrive while it waits for another name (or before it
waits at all) and must be buffered. Each thread raises its events in
sequence; the store's arrival order is read back from the history.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

from durable import Context, Runtime, activity, workflow
from durable.history import EventRaised

THREADS = 8
PER_THREAD = 125
NAMES = ("alpha", "beta", "gamma", "delta")
TOTAL = THREADS * PER_THREAD
WAIT = 180.0


@workflow(name="rel_event_collector")
def rel_event_collector(ctx: Context, per_name: int) -> Generator[Any, Any, dict[str, list[Any]]]:
    got: dict[str, list[Any]] = {name: [] for name in NAMES}
    for name in NAMES:  # all of one name, then the next: the others wait in the buffer
        for _ in range(per_name):
            got[name].append((yield ctx.wait_for_event(name)))
    return got


def test_a_thousand_events_from_eight_threads_arrive_once_each_in_order(tmp_path: Path) -> None:
    with Runtime(f"sqlite:///{tmp_path / 'events.db'}") as runtime:
        iid = runtime.start(rel_event_collector, TOTAL // len(NAMES), instance_id="events")
        go = threading.Barrier(THREADS)
        errors: list[BaseException] = []

        def raise_events(thread: int) -> None:
            try:
                go.wait()
                for n in range(PER_THREAD):
                    name = NAMES[(thread + n) % len(NAMES)]
                    runtime.raise_event(iid, name, {"thread": thread, "n": n, "name": name})
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=raise_events, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not errors
        got = runtime.wait(iid, timeout=WAIT)
        history = runtime.history(iid)

    raised = [e for e in history if isinstance(e, EventRaised)]
    assert len(raised) == TOTAL
    sent = {(t, n) for t in range(THREADS) for n in range(PER_THREAD)}
    delivered = [(d["thread"], d["n"]) for name in NAMES for d in got[name]]
    assert len(delivered) == TOTAL and set(delivered) == sent  # every event exactly once
    for name in NAMES:
        assert all(d["name"] == name for d in got[name])  # each to a wait on its name
        arrival = [e.data for e in raised if e.event == name]
        assert got[name] == arrival  # in the order they arrived
        per_thread: dict[int, list[int]] = defaultdict(list)
        for d in got[name]:
            per_thread[d["thread"]].append(d["n"])
        assert all(ns == sorted(ns) for ns in per_thread.values())  # a sender's order is kept


GATE = threading.Event()


@activity(name="rel_gate")
def rel_gate() -> str:
    assert GATE.wait(60)
    return "opened"


@workflow(name="rel_two_waits_one_name")
def rel_two_waits_one_name(ctx: Context) -> Generator[Any, Any, list[Any]]:
    first = yield ctx.call(rel_gate)  # events raised meanwhile must be kept
    both = yield ctx.all([ctx.wait_for_event("x"), ctx.wait_for_event("x")])
    later = yield ctx.wait_for_event("y")
    return [first, both, later]


def test_events_raised_before_the_workflow_waits_are_buffered_and_shared_in_order() -> None:
    GATE.clear()
    with Runtime(time_skipping=True) as runtime:
        iid = runtime.start(rel_two_waits_one_name)
        runtime.raise_event(iid, "y", "why")
        runtime.raise_event(iid, "x", 1)
        runtime.raise_event(iid, "x", 2)
        runtime.raise_event(iid, "x", 3)  # one more than awaited: stays buffered, unused
        GATE.set()
        assert runtime.wait(iid, timeout=WAIT) == ["opened", [1, 2], "why"]
