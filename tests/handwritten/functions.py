"""The Lambda functions the hand-written state machines call (run in-process behind moto's Lambda).

Each is what someone chaining Lambdas by hand would deploy: the business logic, a JSON
event in and a JSON result out, nothing else.
"""

from __future__ import annotations

from typing import Any


def send_email(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """examples/remind_user.py's send_email: send the reminder and count it."""
    return {**event, "times_reminded": int(event.get("times_reminded", 0)) + 1}


def square_step(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One step of tests/aws_flows.py's remote_chain: ``value += i * i``, then the next i."""
    i, value = int(event["i"]), int(event["value"])
    return {"i": i + 1, "value": value + i * i}
