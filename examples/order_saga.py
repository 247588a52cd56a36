"""An order saga: charge, reserve, ship; undo what was done, in reverse, when a step fails.

Each forward step that succeeds pushes its compensation onto a stack; when a
later step fails, the workflow pops the stack and runs the compensations
(the last thing done is undone first), then re-raises the failure so the
instance ends FAILED with the original exception.

Run it (a success, then a failure at shipping):
    durable run examples/order_saga.py:order_saga --time-skipping \\
        --input '{"order_id": "o-1", "amount": 42.5, "sku": "book", "quantity": 2}'
    durable run examples/order_saga.py:order_saga --time-skipping \\
        --input '{"order_id": "o-2", "amount": 42.5, "sku": "book", "quantity": 2, "fail_at": "shipping"}'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel

from durable import Activity, Context, RetryPolicy, WorkflowResult, activity, workflow

Step = Literal["payment", "inventory", "shipping"]


class Order(BaseModel):
    order_id: str
    amount: float
    sku: str
    quantity: int = 1
    fail_at: Step | None = None
    """For the demo: the step whose activity fails (``None``: everything succeeds)."""


class Receipt(BaseModel):
    order_id: str
    payment_id: str
    reservation_id: str
    tracking_number: str


class PaymentDeclined(Exception):
    """The card was refused (not worth retrying)."""


class OutOfStock(Exception):
    """Nothing left to reserve."""


class CarrierUnavailable(Exception):
    """No carrier accepted the parcel."""


# Forward steps. A failure that retrying cannot fix is marked non-retryable.
_NO_RETRY_ON_BUSINESS_ERRORS = RetryPolicy(
    max_attempts=3,
    initial_interval=timedelta(seconds=2),
    non_retryable=(PaymentDeclined, OutOfStock, CarrierUnavailable),
)


@activity(name="order_saga.charge_payment", retry=_NO_RETRY_ON_BUSINESS_ERRORS)
def charge_payment(order: Order) -> str:
    if order.fail_at == "payment":
        raise PaymentDeclined(f"card refused for {order.amount:.2f}")
    return f"pay-{order.order_id}"


@activity(name="order_saga.reserve_inventory", retry=_NO_RETRY_ON_BUSINESS_ERRORS)
def reserve_inventory(order: Order) -> str:
    if order.fail_at == "inventory":
        raise OutOfStock(f"no {order.quantity} x {order.sku} left")
    return f"res-{order.order_id}"


@activity(name="order_saga.ship_order", retry=_NO_RETRY_ON_BUSINESS_ERRORS)
def ship_order(order: Order) -> str:
    if order.fail_at == "shipping":
        raise CarrierUnavailable("no carrier today")
    return f"track-{order.order_id}"


# Compensations: they must succeed eventually, so they retry harder.
_KEEP_TRYING = RetryPolicy(max_attempts=10, initial_interval=timedelta(seconds=1), backoff=2.0)


@activity(name="order_saga.refund_payment", retry=_KEEP_TRYING)
def refund_payment(payment_id: str) -> str:
    return f"refunded {payment_id}"


@activity(name="order_saga.release_inventory", retry=_KEEP_TRYING)
def release_inventory(reservation_id: str) -> str:
    return f"released {reservation_id}"


@workflow
def order_saga(ctx: Context, order: Order) -> WorkflowResult[Receipt]:
    """Charge, reserve, ship; on failure run the compensations in reverse order."""
    compensations: list[tuple[Activity[[str], str], str]] = []  # undone last-first
    try:
        payment_id = yield from ctx.call(charge_payment, order, name="Charge payment")
        compensations.append((refund_payment, payment_id))

        reservation_id = yield from ctx.call(reserve_inventory, order, name="Reserve stock")
        compensations.append((release_inventory, reservation_id))

        tracking = yield from ctx.call(ship_order, order, name="Ship")
    except Exception:
        ctx.set_status({"state": "compensating", "steps": len(compensations)})
        for undo, argument in reversed(compensations):
            yield ctx.call(undo, argument, name=f"Undo: {undo.name}")
        raise  # the instance ends FAILED with the original exception
    return Receipt(
        order_id=order.order_id,
        payment_id=payment_id,
        reservation_id=reservation_id,
        tracking_number=tracking,
    )
