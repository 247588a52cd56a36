"""Human in the loop: wait up to 24 hours for an ``approval`` event, escalate on timeout.

While it waits, the workflow publishes a custom status (``ctx.set_status``)
that ``durable status ID`` and the HTTP API show. An approver answers with
an event, e.g. ``durable signal ID approval --data '{"approved": true, "by": "Grace"}'``
(or ``Runtime.raise_event(id, "approval", {...})``); an event sent before the
workflow started waiting is kept for it.

Run it (no one approves, so with time skipping it escalates at once):
    durable run examples/human_approval.py:expense_approval --time-skipping \\
        --input '{"request_id": "exp-7", "requester": "Ada", "amount": 1200}'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel

from durable import Context, WorkflowResult, activity, workflow

APPROVAL_TIMEOUT = timedelta(hours=24)


class ExpenseRequest(BaseModel):
    request_id: str
    requester: str
    amount: float


class Approval(BaseModel):
    """The data of an ``approval`` event."""

    approved: bool
    by: str
    comment: str = ""


class Outcome(BaseModel):
    request_id: str
    decision: Literal["approved", "rejected", "escalated"]
    decided_by: str | None = None
    waited_hours: float


@activity(name="human_approval.ask_approver")
def ask_approver(request: ExpenseRequest) -> None:
    """Tell the approver there is something to decide (here: print it)."""
    print(f"  -> approval needed: {request.requester} asks for {request.amount:.2f}")


@activity(name="human_approval.escalate")
def escalate(request: ExpenseRequest) -> str:
    """Nobody answered in time: hand the request to a manager."""
    print(f"  -> escalating {request.request_id} to a manager")
    return "manager"


@workflow
def expense_approval(ctx: Context, request: ExpenseRequest) -> WorkflowResult[Outcome]:
    """Ask, wait up to a day for a decision, escalate if none came."""
    asked_at = ctx.now()
    yield ctx.call(ask_approver, request, name="Ask approver")
    ctx.set_status({"state": "waiting for approval", "since": asked_at.isoformat()})
    try:
        answer = yield ctx.wait_for_event(
            "approval", timeout=APPROVAL_TIMEOUT, name="Wait for approval"
        )
    except TimeoutError:
        ctx.set_status({"state": "escalated"})
        yield ctx.call(escalate, request, name="Escalate")
        decision: Literal["approved", "rejected", "escalated"] = "escalated"
        by = None
    else:
        approval = Approval.model_validate(answer)
        decision = "approved" if approval.approved else "rejected"
        by = approval.by
        ctx.set_status({"state": decision, "by": by})
    waited = (ctx.now() - asked_at).total_seconds() / 3600
    return Outcome(
        request_id=request.request_id, decision=decision, decided_by=by, waited_hours=waited
    )
