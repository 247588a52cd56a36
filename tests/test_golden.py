"""Golden histories: exported JSON histories of small workflows, replayed against the code.

The files in ``tests/golden/`` were recorded by :func:`record` (run
``python -c "from tests.test_golden import write_golden; write_golden()"``
to write them again, on purpose only). A
change to these workflows that would break instances already running on the
old code makes these tests fail, the way it would leave such instances STUCK.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durable import Context, NonDeterminismError, RetryPolicy, Status, activity, workflow
from durable.history import Event, Message, dump_history, load_history
from durable.replay import Decision, replay
from durable.runtime.activity import run_activity
from durable.testing import EPOCH, build_history, event_message, replay_history, started
from durable.workflow import Workflow

GOLDEN = Path(__file__).parent / "golden"


class CardDeclined(Exception):
    pass


_CHARGES = {"count": 0}


@activity(name="t_g_reserve")
def reserve(item: str, qty: int) -> str:
    return f"reservation-{item}-{qty}"


@activity(
    name="t_g_charge", retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=2))
)
def charge(amount: int) -> str:
    _CHARGES["count"] += 1
    if _CHARGES["count"] == 1:
        raise CardDeclined("try again")
    return f"paid {amount}"


@activity(name="t_g_square")
def square(n: int) -> int:
    return n * n


@workflow(name="t_g_order")
def order(ctx: Context, qty: int) -> Generator[Any, Any, dict[str, Any]]:
    reservation = yield ctx.call(reserve, "tea", qty, name="Reserve")
    payment = yield ctx.call(charge, qty * 3, name="Charge")
    ctx.set_status("waiting for approval")
    try:
        approval = yield ctx.wait_for_event("approval", timeout=timedelta(hours=1))
    except TimeoutError:
        approval = None
    yield ctx.sleep(timedelta(minutes=5), name="Cool down")
    return {"reservation": reservation, "payment": payment, "approval": approval}


@workflow(name="t_g_fan_out")
def fan_out(ctx: Context, n: int) -> Generator[Any, Any, dict[str, Any]]:
    squares = yield ctx.all([ctx.call(square, i) for i in range(n)])
    batch = str(ctx.uuid())
    total = sum(squares) if ctx.patched("add-total") else None
    quick = ctx.call(square, 10)
    winner = yield ctx.any([quick, ctx.sleep(timedelta(seconds=30))])
    return {"squares": squares, "batch": batch, "total": total, "quick": winner is quick}


@workflow(name="t_g_fan_out_changed")
def fan_out_changed(ctx: Context, n: int) -> Generator[Any, Any, dict[str, Any]]:
    """``fan_out`` after an incompatible edit: a timer now comes before the fan-out."""
    yield ctx.sleep(timedelta(seconds=1))
    squares = yield ctx.all([ctx.call(square, i) for i in range(n)])
    return {"squares": squares}


@workflow(name="t_g_waiting")
def waiting(ctx: Context) -> Generator[Any, Any, str]:
    ticket = yield ctx.call(reserve, "seat", 1)
    answer = yield ctx.wait_for_event("confirm", timeout=timedelta(days=1))
    return f"{ticket}: {answer}"


# ----------------------------------------------------------------------------- recording


def _drive(wf: Workflow[Any, Any], input: Any, inbox_at: dict[int, list[Message]]) -> list[Event]:
    """Run ``wf`` on the pure engine, activities run for real, time jumping to each wake-up."""
    history = build_history(started(wf, input))
    now = EPOCH
    inbox: list[Message] = []
    for round_ in range(20):
        inbox += inbox_at.get(round_, [])
        decision: Decision = replay(wf, history, inbox, now, instance_id="golden")
        history += decision.events
        if decision.status != Status.RUNNING:
            break
        inbox = [run_activity(w, now=_clock(now)) for w in decision.dispatch]
        if not inbox and round_ + 1 not in inbox_at and decision.wake_at is not None:
            now = decision.wake_at
    return [_scrub(e) for e in history]


def _scrub(event: Event) -> Event:
    """Drop recorded tracebacks: they name files of the machine that recorded them."""
    error = getattr(event, "error", None)
    if error is None:
        return event
    return event.model_copy(update={"error": error.model_copy(update={"traceback": ""})})


def record() -> dict[str, list[Event]]:
    """The golden histories, recorded afresh from the current code."""
    _CHARGES["count"] = 0
    return {
        "order.json": _drive(order, 2, {3: [event_message("approval", "ok")]}),
        "fan_out.json": _drive(fan_out, 3, {}),
        "waiting.json": _drive(waiting, None, {})[:4],  # stopped while waiting for "confirm"
    }


def _comparable(events: list[Event]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        data = event.model_dump(mode="json")
        if isinstance(data.get("error"), dict):
            data["error"].pop("pickled")  # cloudpickle bytes may vary between versions
        out.append(data)
    return out


# ----------------------------------------------------------------------------- tests


CASES = [
    ("order.json", order, Status.COMPLETED),
    ("fan_out.json", fan_out, Status.COMPLETED),
    ("waiting.json", waiting, Status.RUNNING),
]


@pytest.mark.parametrize(("file", "wf", "status"), CASES, ids=[c[0] for c in CASES])
def test_golden_history_replays_against_the_current_code(
    file: str, wf: Workflow[Any, Any], status: Status
) -> None:
    path = GOLDEN / file
    decision = replay_history(wf, path)
    assert decision.status == status
    history = load_history(path.read_text())
    if status == Status.COMPLETED:
        assert decision.output == history[-1].result  # type: ignore[union-attr]


def test_golden_histories_round_trip_through_json() -> None:
    for file, _, _ in CASES:
        text = (GOLDEN / file).read_text()
        assert dump_history(load_history(text)) == text.rstrip("\n")


def test_golden_histories_match_what_the_code_records_today() -> None:
    """The engine still writes the same events for the same inputs (timestamps are fixed)."""
    for file, events in record().items():
        assert _comparable(events) == _comparable(load_history((GOLDEN / file).read_text())), file


def test_an_incompatible_change_is_reported_as_non_determinism() -> None:
    with pytest.raises(NonDeterminismError) as info:
        replay_history(fan_out_changed, GOLDEN / "fan_out.json")
    err = info.value
    assert err.position == 1
    assert err.recorded == "activity 't_g_square'"
    assert err.yielded == "timer (0:00:01)"


def test_golden_waiting_history_resumes_when_the_event_arrives() -> None:
    history = load_history((GOLDEN / "waiting.json").read_text())
    decision = replay(
        waiting, history, [event_message("confirm", "yes")], EPOCH, instance_id="golden"
    )
    assert decision.output == "reservation-seat-1: yes"


def write_golden() -> None:  # pragma: no cover - rewrites the golden files on purpose
    """Record the golden histories again (only when a change is meant to break them)."""
    GOLDEN.mkdir(exist_ok=True)
    for name, events in record().items():
        (GOLDEN / name).write_text(dump_history(events) + "\n")


def _clock(at: datetime) -> Callable[[], datetime]:
    """A clock standing still at ``at`` (activities stamp their results with it)."""
    return lambda: at
