"""The buffered samples cut into batches: numbered, and in the spool before anyone may send them.

``Batcher`` turns what the recorder buffered into numbered batches and writes each to the spool.
A batch carries its samples grouped by series (the wire's ``series`` form: each name and label set
once, then every ``[ts_ms, value]`` point), which is what a collector decodes cheaply; every sample
keeps its own timestamp and value.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.delivery.spool import Spool
from lifeline_agent.errors import SpoolError
from lifeline_agent.recorder import Recorder
from lifeline_wire import Batch, Sample, SeriesPoints
from lifeline_wire.schema import MAX_EVENTS_PER_BATCH, MAX_SAMPLES_PER_BATCH, Point

log = logging.getLogger(__name__)


def group_by_series(samples: list[Sample]) -> list[SeriesPoints]:
    """Samples grouped by series, series in the order first recorded, points in recorded order."""
    grouped: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[dict[str, str], list[Point]]] = {}
    for sample in samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        entry = grouped.get(key)
        if entry is None:
            entry = grouped[key] = (sample.labels, [])
        entry[1].append((sample.ts_ms, sample.value))
    return [SeriesPoints(key[0], labels, points) for key, (labels, points) in grouped.items()]


def new_boot_id() -> str:
    """A random id per process start; with ``seq`` from 0 it makes every batch unique."""
    return secrets.token_hex(8)


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
        series_form: bool = True,
    ) -> None:
        self.agent_id = agent_id
        self.boot_id = boot_id
        self.recorder = recorder
        self.spool = spool
        self.clock = clock or SystemClock()
        self.before_cut = before_cut
        self.after_spool = after_spool
        # False cuts version 1 batches (one object per sample), for collectors not upgraded yet.
        self.series_form = series_form
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
                    samples=[] if self.series_form else chunk_s,
                    events=chunk_e,
                    priority=priority,
                    series=group_by_series(chunk_s) if self.series_form else [],
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
