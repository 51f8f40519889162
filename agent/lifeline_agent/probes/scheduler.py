"""Timing: each target probed on its own interval.

``Scheduler`` starts every target at a random offset within its interval (so a fleet does not
probe in lock step) and keeps a fixed rate without drift, skipping rounds it could not start in
time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random

from lifeline_agent.clock import Clock, SystemClock
from lifeline_agent.config import Target
from lifeline_agent.probes.runner import ProbeRunner

log = logging.getLogger(__name__)


class Wake:
    """A target's sleep between rounds that a poke cuts short: one timer and one future, no task."""

    __slots__ = ("_future", "poked")

    def __init__(self) -> None:
        self.poked = False
        self._future: asyncio.Future[bool] | None = None

    def set(self) -> None:
        self.poked = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)

    def clear(self) -> None:
        self.poked = False

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; True if poked before or during the sleep."""
        if self.poked:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._future = future
        timer = loop.call_later(max(0.0, delay), _expire, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._future = None


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Scheduler:
    """Probes each target on its own loop; the target set may change while it runs (discovery).

    Targets that share an interval share one random grid, on which they are spread evenly over the
    interval: eight targets at 1 s probe every 125 ms in turn. The probes behind a layer all cross
    it, so spread out they time a cut of that layer to a fraction of a second (the health model's
    crossing hold) where rounds in lock step could only time it to a whole interval. Targets that
    discovery adds later take a random place on the grid.
    """

    def __init__(
        self,
        targets: tuple[Target, ...],
        runner: ProbeRunner,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.runner = runner
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 - start offsets, not security
        self._targets = {t.name: t for t in targets}
        self._pokes = {t.name: Wake() for t in targets}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._grid: dict[float, float] = {}  # interval → the monotonic time of one of its ticks
        self._slot: dict[str, float] = {}  # target → its place on its interval's grid (0 ≤ slot < 1)

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(self._targets.values())

    def poke(self, names: list[str] | None = None) -> list[str]:
        """Probe now (a link changed) instead of waiting for the next tick; returns who was poked."""
        poked = []
        for name, wake in self._pokes.items():
            if names is None or name in names:
                wake.set()
                poked.append(name)
        return poked

    def set_targets(self, targets: tuple[Target, ...]) -> tuple[list[Target], list[Target]]:
        """Replace the target set: new targets start probing at once, gone ones stop (added, removed)."""
        wanted = {t.name: t for t in targets}
        removed = [t for name, t in self._targets.items() if wanted.get(name) != t]
        added = [t for name, t in wanted.items() if self._targets.get(name) != t]
        for target in removed:
            del self._targets[target.name]
            self._pokes.pop(target.name, None)
            self._slot.pop(target.name, None)
            task = self._loops.pop(target.name, None)
            if task is not None:
                task.cancel()
        for target in added:
            self._targets[target.name] = target
            self._pokes[target.name] = Wake()
            self._slot[target.name] = self._rng.random()
            if self._running:
                self._start(target, first=self.clock.monotonic())
        return added, removed

    async def run(self) -> None:
        """Probe until cancelled."""
        self._running = True
        try:
            by_interval: dict[float, list[Target]] = {}
            for target in self._targets.values():
                by_interval.setdefault(target.interval, []).append(target)
            for group in by_interval.values():
                for k, target in enumerate(group):
                    self._slot[target.name] = k / len(group)
            for target in list(self._targets.values()):
                self._start(
                    target, self._tick(target.interval, self.clock.monotonic(), self._slot[target.name])
                )
            await asyncio.Event().wait()  # forever; the loops run as their own tasks
        finally:
            self._running = False
            loops = list(self._loops.values())
            self._loops.clear()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def _tick(self, interval: float, after: float, slot: float = 0.0) -> float:
        """The first tick of ``interval``'s grid at or after ``after`` (its phase drawn once, at
        random), ``slot`` of an interval along (a target's place on the grid)."""
        base = self._grid.get(interval)
        if base is None:
            base = self._grid[interval] = after + self._rng.uniform(0.0, interval)
        base += slot * interval
        return base + math.ceil((after - base) / interval) * interval

    def _start(self, target: Target, first: float) -> None:
        task = asyncio.get_running_loop().create_task(self._loop(target, first), name=f"probe:{target.name}")
        self._loops[target.name] = task
        task.add_done_callback(self._ended)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped: %r (its target is no longer probed)", task.get_name(), task.exception())

    async def _loop(self, target: Target, first: float) -> None:
        wake = self._pokes[target.name]
        interval = target.interval
        await wake.sleep(first - self.clock.monotonic())
        while True:
            wake.clear()
            started = self.clock.monotonic()
            await self.runner.run_once(target)
            # Back on the grid: the next tick at least half an interval after this round started
            # (a round that overran skips the ticks it missed rather than bunching them).
            after = max(started + interval / 2, self.clock.monotonic())
            next_at = self._tick(interval, after, self._slot.get(target.name, 0.0))
            await wake.sleep(next_at - self.clock.monotonic())
