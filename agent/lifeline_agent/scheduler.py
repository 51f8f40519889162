"""Timing: each target probed on its own interval, and the buffered samples cut into batches.

``Scheduler`` starts every target at a random offset within its interval (so a fleet does not
probe in lock step) and keeps a fixed rate without drift, skipping rounds it could not start in
time. ``Batcher`` turns what the recorder buffered into numbered batches and writes each to the
spool before anyone may send it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
from collections.abc import Callable

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.config import Target
from lifeline_agent.errors import SpoolError
from lifeline_agent.recorder import Recorder
from lifeline_agent.runner import ProbeRunner
from lifeline_agent.spool import Spool
from lifeline_wire import Batch
from lifeline_wire.schema import MAX_EVENTS_PER_BATCH, MAX_SAMPLES_PER_BATCH

log = logging.getLogger(__name__)


def new_boot_id() -> str:
    """A random id per process start; with ``seq`` from 0 it makes every batch unique."""
    return secrets.token_hex(8)


class Scheduler:
    """Probes each target on its own loop; the target set may change while it runs (discovery)."""

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
        self._pokes = {t.name: asyncio.Event() for t in targets}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._running = False

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(self._targets.values())

    def poke(self, names: list[str] | None = None) -> list[str]:
        """Probe now (a link changed) instead of waiting for the next tick; returns who was poked."""
        poked = []
        for name, event in self._pokes.items():
            if names is None or name in names:
                event.set()
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
            task = self._loops.pop(target.name, None)
            if task is not None:
                task.cancel()
        for target in added:
            self._targets[target.name] = target
            self._pokes[target.name] = asyncio.Event()
            if self._running:
                self._start(target, offset=0.0)
        return added, removed

    async def run(self) -> None:
        """Probe until cancelled."""
        self._running = True
        try:
            for target in list(self._targets.values()):
                self._start(target, self._rng.uniform(0.0, target.interval))
            await asyncio.Event().wait()  # forever; the loops run as their own tasks
        finally:
            self._running = False
            loops = list(self._loops.values())
            self._loops.clear()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def _start(self, target: Target, offset: float) -> None:
        task = asyncio.get_running_loop().create_task(self._loop(target, offset), name=f"probe:{target.name}")
        self._loops[target.name] = task
        task.add_done_callback(self._ended)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped: %r (its target is no longer probed)", task.get_name(), task.exception())

    async def _loop(self, target: Target, offset: float) -> None:
        poke = self._pokes[target.name]
        await self._wait(poke, offset)
        next_at = self.clock.monotonic()
        while True:
            poke.clear()
            await self.runner.run_once(target)
            now = self.clock.monotonic()
            next_at += target.interval
            if next_at < now:  # overran: skip the rounds we missed rather than bunch them
                next_at += math.ceil((now - next_at) / target.interval) * target.interval
            if await self._wait(poke, next_at - now):
                next_at = self.clock.monotonic()

    @staticmethod
    async def _wait(poke: asyncio.Event, delay: float) -> bool:
        """Sleep ``delay`` seconds; True if poked early."""
        try:
            await asyncio.wait_for(poke.wait(), timeout=max(0.0, delay))
        except TimeoutError:
            return False
        return True


class Batcher:
    """Recorder → numbered Batch → spool. ``seq`` grows from 0 within one boot."""

    def __init__(
        self,
        agent_id: str,
        boot_id: str,
        recorder: Recorder,
        spool: Spool,
        clock: Clock | None = None,
        before_cut: Callable[[], None] | None = None,
        after_spool: Callable[[], None] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.boot_id = boot_id
        self.recorder = recorder
        self.spool = spool
        self.clock = clock or SystemClock()
        self.before_cut = before_cut
        self.after_spool = after_spool
        self.seq = 0
        self._lock = asyncio.Lock()
        # Batches cut but not yet spooled (the spool failed): retried first at the next flush.
        self._unspooled: list[Batch] = []

    def cut(self, priority: bool = False) -> list[Batch]:
        """Number what the recorder holds into batches (at least one, possibly empty)."""
        if self.before_cut is not None:
            self.before_cut()
        samples, events = self.recorder.drain()
        batches: list[Batch] = []
        while True:
            chunk_s, samples = samples[:MAX_SAMPLES_PER_BATCH], samples[MAX_SAMPLES_PER_BATCH:]
            chunk_e, events = events[:MAX_EVENTS_PER_BATCH], events[MAX_EVENTS_PER_BATCH:]
            batches.append(
                Batch(
                    agent_id=self.agent_id,
                    boot_id=self.boot_id,
                    seq=self.seq,
                    created_ms=now_ms(self.clock),
                    samples=chunk_s,
                    events=chunk_e,
                    priority=priority,
                )
            )
            self.seq += 1
            if not samples and not events:
                return batches

    async def flush(self, priority: bool = False) -> list[Batch]:
        """Cut a batch and spool it (with any earlier batch the spool could not take)."""
        async with self._lock:
            todo = [*self._unspooled, *self.cut(priority)]
            self._unspooled = []
            spooled: list[Batch] = []
            for index, batch in enumerate(todo):
                try:
                    await asyncio.to_thread(self.spool.append, batch)
                except SpoolError as exc:
                    log.error("cannot spool batch %d, keeping it in memory: %s", batch.seq, exc)
                    self._unspooled = todo[index:]
                    break
                spooled.append(batch)
        if spooled and self.after_spool is not None:
            self.after_spool()
        return spooled
