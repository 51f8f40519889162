"""The clock seam: wall time for timestamps, monotonic time for intervals and deadlines."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the Unix epoch (timestamps that leave the agent)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (intervals, deadlines)."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def now_ms(clock: Clock) -> int:
    return int(clock.time() * 1000)
