"""The clock seam: wall time for timestamps, monotonic time for intervals and deadlines.

And ``pause``: the wait between two turns of every agent loop, cut short when the agent stops.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def pause(stop: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds or until ``stop`` is set: one timer on this task, no helper task."""
    if stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()
