"""The orchestrator's side of the activity Lambda: invoke and wait briefly, or start and leave.

A round of activities the orchestrator can wait for is invoked synchronously
with a deadline (``reply_by``, epoch seconds). An attempt that finishes before
it answers with its outcome, which the orchestrator commits with its next
step; one that finishes later posts its outcome to the inbox itself, waking
the parked loop. Waiting costs Lambda time instead of state transitions:
at 512 MB, three seconds of waiting cost about what one transition does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from durable.decision import ActivityWork
from durable.history import ActivityResult, message_from_json
from durable.runtime.activity import failed_result
from durable.runtime.aws_loop import (
    CARRIED_INPUT_BYTES,
    ActivityCrashed,
    ActivityRef,
    carried_work,
)
from durable.runtime.clock import Clock

REPLY_GRACE_SECONDS = 2.0
"""How much longer than ``reply_by`` the orchestrator listens for an answer."""
REPLY_MARGIN_SECONDS = 0.5
"""An attempt answers with its outcome only when it finishes this long before ``reply_by``."""
START_THREADS = 16
"""Parallel asynchronous invocations when starting a round."""


class LambdaDispatcher:
    """Runs attempts in the activity Lambda (``Dispatcher`` of :mod:`durable.runtime.aws_loop`).

    Args:
        waiting_client: a Lambda client whose read timeout covers the longest
            wait plus ``REPLY_GRACE_SECONDS`` and which never retries (a retried
            synchronous invocation would run the attempt twice).
        client: a Lambda client for asynchronous invocations (retries are harmless:
            a duplicate delivery changes nothing recorded).
        function_name: the activity Lambda.
        clock: stamps the failure of an attempt whose invocation died.
    """

    def __init__(
        self,
        waiting_client: Any,
        client: Any,
        function_name: str,
        clock: Clock,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._waiting_client = waiting_client
        self._client = client
        self._function = function_name
        self._clock = clock
        self._wall = wall

    def call(self, works: Sequence[ActivityWork], seconds: float) -> list[ActivityResult | None]:
        """Invoke every attempt at once and wait up to ``seconds`` (see the module docstring).

        An attempt Lambda refuses to run now (throttled, unreachable) is invoked
        asynchronously instead: Lambda queues it and it posts its outcome.
        """
        if not works:
            return []
        reply_by = self._wall() + seconds
        with ThreadPoolExecutor(max_workers=len(works)) as pool:
            return list(pool.map(lambda work: self._call_one(work, reply_by), works))

    def start(self, refs: Sequence[ActivityRef]) -> None:
        """Invoke every attempt asynchronously; each posts its own outcome."""
        if not refs:
            return
        with ThreadPoolExecutor(max_workers=min(len(refs), START_THREADS)) as pool:
            list(pool.map(self._start_one, refs))

    def _start_one(self, ref: ActivityRef) -> None:
        self._client.invoke(
            FunctionName=self._function,
            InvocationType="Event",
            Payload=json.dumps(asdict(ref)).encode("utf-8"),
        )

    def _call_one(self, work: ActivityWork, reply_by: float) -> ActivityResult | None:
        payload: dict[str, Any] = {**asdict(ActivityRef.of(work)), "reply_by": reply_by}
        # The attempt itself travels when small: it spares the activity a read of the history.
        body = json.dumps({**payload, "work": carried_work(work)}).encode("utf-8")
        if len(body) > CARRIED_INPUT_BYTES:
            body = json.dumps(payload).encode("utf-8")
        try:
            response = self._waiting_client.invoke(FunctionName=self._function, Payload=body)
        except (ReadTimeoutError, ConnectionClosedError):
            return None  # still running past reply_by: it posts its outcome itself
        except (ClientError, EndpointConnectionError, ConnectTimeoutError):
            # Not run (throttled, or Lambda unreachable): queue it instead. Lambda keeps
            # an asynchronous invocation and retries it for hours; the attempt posts.
            self._start_one(ActivityRef.of(work))
            return None
        body = response["Payload"].read()
        if response.get("FunctionError"):
            return failed_result(work, ActivityCrashed(_crash_detail(body)), self._clock.now())
        answer = json.loads(body or b"{}")
        outcome = answer.get("outcome") if isinstance(answer, dict) else None
        if not isinstance(outcome, str):
            return None  # posted (late) or nothing to run: the inbox has what there is
        result = message_from_json(outcome)
        return result if isinstance(result, ActivityResult) else None


def _crash_detail(body: bytes) -> str:
    """``errorType: errorMessage`` of a Lambda function error payload."""
    try:
        error = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500] or "Unhandled"
    if not isinstance(error, dict):
        return str(error)[:500]
    kind = str(error.get("errorType", "Unhandled"))
    message = str(error.get("errorMessage", ""))
    return f"{kind}: {message}" if message else kind
