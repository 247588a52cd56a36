"""Clocks for drivers: the system clock, and a virtual one that can skip ahead."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol

from durable.history import utcnow


class Clock(Protocol):
    """Where a driver gets ``now`` from."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return utcnow()


class VirtualClock:
    """Real time plus an offset that only grows: ``advance_to`` jumps to a later time."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return utcnow() + self._offset

    def advance_to(self, when: datetime) -> None:
        """Move virtual time forward to ``when`` (no-op if it is already later)."""
        with self._lock:
            gap = when - (utcnow() + self._offset)
            if gap > timedelta(0):
                self._offset += gap

    @property
    def skipped(self) -> timedelta:
        """How far virtual time is ahead of real time."""
        with self._lock:
            return self._offset
