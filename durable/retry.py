"""Retry policies for activities.

Retries are the engine's job: a failed attempt that the policy allows to be
retried becomes a durable timer in the history, so a retry survives a crash
and shows in the status views.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from durable.codec import qualified_name
from durable.errors import ConfigurationError

LONGEST_DELAY = timedelta(days=365 * 100)
"""The cap of a delay when the policy sets no ``max_interval`` (keeps datetimes in range)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failed activity is attempted again.

    Attempt ``n + 1`` starts ``initial_interval * backoff ** (n - 1)`` after
    attempt ``n`` failed, capped at ``max_interval``. With ``jitter=0.2`` each
    delay is spread by up to 20% either way (deterministically, so replay
    agrees). When attempts run out the workflow sees the last attempt's
    exception.

    Args:
        max_attempts: total attempts including the first; 1 means no retry.
        initial_interval: the delay before the second attempt.
        backoff: factor applied to the delay after every further failure.
        max_interval: upper bound of any single delay.
        non_retryable: exception types (or their names) that are never retried.
        jitter: fraction of each delay to spread it by; 0 (default) for none.
    """

    max_attempts: int = 3
    initial_interval: timedelta = timedelta(seconds=1)
    backoff: float = 2.0
    max_interval: timedelta | None = None
    non_retryable: tuple[type[BaseException] | str, ...] = field(default=())
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}"
            )
        if self.initial_interval < timedelta(0):
            raise ConfigurationError("RetryPolicy.initial_interval must not be negative")
        if self.backoff < 1.0:
            raise ConfigurationError(f"RetryPolicy.backoff must be >= 1.0, got {self.backoff}")
        if self.max_interval is not None and self.max_interval < timedelta(0):
            raise ConfigurationError("RetryPolicy.max_interval must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))

    def delay(self, failed_attempt: int, *, jitter_key: str = "") -> timedelta:
        """The wait between attempt ``failed_attempt`` failing and the next one starting."""
        try:
            seconds = self.initial_interval.total_seconds() * self.backoff ** (failed_attempt - 1)
        except OverflowError:  # a long run of attempts without max_interval
            seconds = math.inf
        cap = self.max_interval if self.max_interval is not None else LONGEST_DELAY
        seconds = min(seconds, cap.total_seconds())
        if self.jitter:
            digest = hashlib.sha256(f"{jitter_key}#{failed_attempt}".encode()).digest()
            unit = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
            seconds *= 1.0 + self.jitter * (2.0 * unit - 1.0)
        return timedelta(seconds=seconds)

    def allows_retry(self, failed_attempt: int, error_types: Iterable[str]) -> bool:
        """Whether attempt ``failed_attempt``, which raised one of ``error_types``, is retried.

        ``error_types`` are the qualified names of the exception's classes (its MRO),
        so ``non_retryable=(ValueError,)`` also stops subclasses of ``ValueError``.
        """
        if failed_attempt >= self.max_attempts:
            return False
        names = set(error_types)
        for entry in self.non_retryable:
            if isinstance(entry, str):
                if entry in names or any(n.rsplit(".", 1)[-1] == entry for n in names):
                    return False
            elif qualified_name(entry) in names:
                return False
        return True


NO_RETRY = RetryPolicy(max_attempts=1)
"""The policy of an activity that neither it nor its workflow gave one: one attempt."""
