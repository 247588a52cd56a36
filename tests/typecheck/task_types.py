"""Checked by mypy (see tests/test_static.py), never run: the types users get from tasks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

from pydantic import BaseModel

from durable import Context, Task, WorkflowResult, activity, workflow


class Invoice(BaseModel):
    number: str
    cents: int


@activity
def bill(customer: str) -> Invoice:
    return Invoice(number=customer, cents=100)


@activity
def count(items: list[str]) -> int:
    return len(items)


@workflow(name="typecheck_billing")
def billing(ctx: Context, customer: str) -> WorkflowResult[int]:
    invoice = yield from ctx.call(bill, customer)
    assert_type(invoice, Invoice)
    task = ctx.call(count, ["a", "b"])
    assert_type(task, Task[int])
    both = yield from ctx.all([ctx.call(count, ["x"]), ctx.call(count, [])])
    assert_type(both, list[int])
    first = yield from ctx.any([task, ctx.call(count, ["y"])])
    assert_type(first, Task[int])
    assert_type(first.result, int)
    untyped = yield ctx.sleep(timedelta(seconds=1))
    assert_type(untyped, Any)
    if invoice.cents > 1000:
        return ctx.continue_as_new(customer)
    return invoice.cents + sum(both)
