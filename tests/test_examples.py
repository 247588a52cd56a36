"""Every example in examples/ runs to its end under time skipping, with the promised behaviour."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

import durable
from durable import Runtime, Status, WorkflowFailed
from durable.history import (
    ActivityScheduled,
    Event,
    EventRaised,
    TimerFired,
    WorkflowContinuedAsNew,
    WorkflowStarted,
)
from examples.fan_out_fan_in import Batch, Report, WordStats, word_report
from examples.human_approval import APPROVAL_TIMEOUT, ExpenseRequest, Outcome, expense_approval
from examples.monitor import CHECKS_PER_RUN, MonitorResult, Watch, monitor_job
from examples.order_saga import CarrierUnavailable, Order, OutOfStock, Receipt, order_saga
from examples.remind_user import User, remind_user

WAIT = 20.0  # seconds: generous upper bound for anything under time skipping


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with Runtime(time_skipping=True) as rt:
        yield rt


def _activities(history: list[Event]) -> list[str]:
    return [e.activity for e in history if isinstance(e, ActivityScheduled) and e.attempt == 1]


def _wait_for(condition: object, what: str, timeout: float = WAIT) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- remind_user


def test_remind_user_sends_two_reminders_a_day_apart(runtime: Runtime) -> None:
    iid = runtime.start(remind_user, User(name="Ada", email="ada@example.com"))
    assert runtime.wait(iid, timeout=WAIT) == User(
        name="Ada", email="ada@example.com", times_reminded=2
    )
    history = runtime.history(iid)
    fired = [e.timestamp for e in history if isinstance(e, TimerFired)]
    assert len(fired) == 2
    assert fired[0] - history[0].timestamp >= timedelta(hours=2)
    assert fired[1] - fired[0] >= timedelta(days=1)
    assert [e.name for e in history if isinstance(e, ActivityScheduled)] == [
        "First reminder",
        "Second reminder",
    ]


# ----------------------------------------------------------------------------- order_saga


def test_order_saga_success_charges_reserves_and_ships(runtime: Runtime) -> None:
    order = Order(order_id="o-1", amount=42.5, sku="book", quantity=2)
    iid = runtime.start(order_saga, order)
    assert runtime.wait(iid, timeout=WAIT) == Receipt(
        order_id="o-1", payment_id="pay-o-1", reservation_id="res-o-1", tracking_number="track-o-1"
    )
    assert _activities(runtime.history(iid)) == [
        "order_saga.charge_payment",
        "order_saga.reserve_inventory",
        "order_saga.ship_order",
    ]


def test_order_saga_failure_compensates_in_reverse_order_and_fails(runtime: Runtime) -> None:
    order = Order(order_id="o-2", amount=10, sku="pen", fail_at="shipping")
    iid = runtime.start(order_saga, order)
    with pytest.raises(WorkflowFailed) as failed:
        runtime.wait(iid, timeout=WAIT)
    assert failed.value.status == "FAILED"
    assert isinstance(failed.value.cause, CarrierUnavailable)
    assert _activities(runtime.history(iid)) == [
        "order_saga.charge_payment",
        "order_saga.reserve_inventory",
        "order_saga.ship_order",
        "order_saga.release_inventory",  # undone last-first
        "order_saga.refund_payment",
    ]
    assert runtime.status(iid).custom_status == {"state": "compensating", "steps": 2}


def test_order_saga_early_failure_only_undoes_what_was_done(runtime: Runtime) -> None:
    iid = runtime.start(order_saga, Order(order_id="o-3", amount=1, sku="x", fail_at="inventory"))
    with pytest.raises(WorkflowFailed) as failed:
        runtime.wait(iid, timeout=WAIT)
    assert isinstance(failed.value.cause, OutOfStock)
    assert _activities(runtime.history(iid)) == [
        "order_saga.charge_payment",
        "order_saga.reserve_inventory",
        "order_saga.refund_payment",
    ]


# ----------------------------------------------------------------------------- fan_out_fan_in


def test_fan_out_runs_in_parallel_and_returns_results_in_input_order(runtime: Runtime) -> None:
    # Long words sleep longest, so they finish last; the report still follows the input.
    words = ["workflows", "are", "durable", "a", "code"]
    iid = runtime.start(word_report, Batch(words=words, delay_per_letter=0.01))
    report: Report = runtime.wait(iid, timeout=WAIT)
    assert [s.word for s in report.stats] == words
    assert report.stats[0] == WordStats(word="workflows", letters=9, vowels=2)
    assert report.total_letters == sum(map(len, words))
    assert report.longest == "workflows"
    history = runtime.history(iid)
    # Every activity was scheduled in one step, before any of them completed.
    kinds = [e.kind for e in history]
    assert kinds[1 : 1 + len(words)] == ["ActivityScheduled"] * len(words)
    completed = [e.task_id for e in history if e.kind == "ActivityCompleted"]
    assert completed[0] != 1  # "workflows" (task 1) was not first to finish


def test_fan_out_over_an_empty_list(runtime: Runtime) -> None:
    iid = runtime.start(word_report, Batch(words=[]))
    assert runtime.wait(iid, timeout=WAIT) == Report(stats=[], total_letters=0, longest=None)


# ----------------------------------------------------------------------------- human_approval


def test_human_approval_approved_by_event(runtime: Runtime) -> None:
    iid = runtime.start(
        expense_approval, ExpenseRequest(request_id="e-1", requester="Ada", amount=9)
    )
    # Nobody waits yet, so time stands still: the workflow sits waiting for the event.
    _wait_for(
        lambda: (runtime.status(iid).custom_status or {}).get("state") == "waiting for approval",
        "the waiting status",
    )
    runtime.raise_event(iid, "approval", {"approved": True, "by": "Grace"})
    outcome: Outcome = runtime.wait(iid, timeout=WAIT)
    assert outcome.decision == "approved"
    assert outcome.decided_by == "Grace"
    assert outcome.waited_hours < 1
    assert runtime.status(iid).custom_status == {"state": "approved", "by": "Grace"}
    history = runtime.history(iid)
    assert any(isinstance(e, EventRaised) and e.event == "approval" for e in history)
    assert "human_approval.escalate" not in _activities(history)


def test_human_approval_rejection_sent_before_the_wait_is_kept(runtime: Runtime) -> None:
    iid = runtime.start(
        expense_approval, ExpenseRequest(request_id="e-2", requester="Bo", amount=5)
    )
    runtime.raise_event(iid, "approval", {"approved": False, "by": "Grace", "comment": "no"})
    outcome: Outcome = runtime.wait(iid, timeout=WAIT)
    assert (outcome.decision, outcome.decided_by) == ("rejected", "Grace")


def test_human_approval_escalates_after_24_hours(runtime: Runtime) -> None:
    iid = runtime.start(
        expense_approval, ExpenseRequest(request_id="e-3", requester="Cy", amount=7)
    )
    outcome: Outcome = runtime.wait(iid, timeout=WAIT)
    assert outcome.decision == "escalated"
    assert outcome.decided_by is None
    assert outcome.waited_hours >= APPROVAL_TIMEOUT.total_seconds() / 3600
    assert runtime.status(iid).custom_status == {"state": "escalated"}
    assert _activities(runtime.history(iid)) == [
        "human_approval.ask_approver",
        "human_approval.escalate",
    ]


# ----------------------------------------------------------------------------- monitor


def test_monitor_polls_until_done_continuing_as_new(runtime: Runtime) -> None:
    iid = runtime.start(monitor_job, Watch(job_id="job-42", done_after_checks=7))
    result: MonitorResult = runtime.wait(iid, timeout=WAIT)
    assert result == MonitorResult(job_id="job-42", checks=7, runs=3)
    status = runtime.status(iid)
    assert status.status == Status.COMPLETED
    assert status.run == 3
    # The current run's history starts afresh: only the checks of the last run are in it.
    history = runtime.history(iid)
    assert isinstance(history[0], WorkflowStarted)
    assert history[0].run == 3
    assert history[0].input["checks"] == 2 * CHECKS_PER_RUN
    assert len(_activities(history)) == 7 - 2 * CHECKS_PER_RUN
    assert not any(isinstance(e, WorkflowContinuedAsNew) for e in history)
    assert status.custom_status == {"checks": 7, "progress": 1.0}


def test_monitor_done_in_the_first_run() -> None:
    result = durable.run(monitor_job, Watch(job_id="j", done_after_checks=1), time_skipping=True)
    assert result == MonitorResult(job_id="j", checks=1, runs=1)
