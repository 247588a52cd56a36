"""Remind a user twice: wait two hours, email, wait a day, email again.

Run it (timers skipped):
    durable run examples/remind_user.py:remind_user --time-skipping \\
        --input '{"name": "Ada", "email": "ada@example.com"}'
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from durable import Context, RetryPolicy, WorkflowResult, activity, workflow


class User(BaseModel):
    name: str
    email: str
    times_reminded: int = 0


@activity(retry=RetryPolicy(max_attempts=5, backoff=2.0, initial_interval=timedelta(seconds=1)))
def send_email(user: User) -> User:
    """Send the reminder (here: print it) and count it."""
    print(f"  -> emailing {user.email}: reminder #{user.times_reminded + 1}")
    return user.model_copy(update={"times_reminded": user.times_reminded + 1})


@workflow
def remind_user(ctx: Context, user: User) -> WorkflowResult[User]:
    """Two reminders, two hours and a day apart."""
    yield ctx.sleep(timedelta(hours=2), name="Wait two hours")
    user = yield from ctx.call(send_email, user, name="First reminder")
    yield ctx.sleep(timedelta(days=1), name="Wait one day")
    user = yield from ctx.call(send_email, user, name="Second reminder")
    ctx.logger.info("reminded %s %d times", user.name, user.times_reminded)
    return user
