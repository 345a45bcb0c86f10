"""Clocks. Expiry is computed from an injectable clock so tests move time instead of sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time as epoch seconds."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock (`time.time`)."""

    def now(self) -> float:
        """Return `time.time()`."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to; starts at the real current time.

    Starting at the real time keeps the server-side TTLs that backends set (which follow the
    real clock) in the future, so only read-time checks decide expiry in tests.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the clock's current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        if seconds < 0:
            msg = "a ManualClock only moves forward"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds
