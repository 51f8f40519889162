"""The in-memory feeding mode: ``RemoteWriter`` takes samples from ``submit()`` as ingest stores
them and sends them from a bounded queue. It never blocks ingest: past its bound the oldest
samples are dropped and counted (they stay in the store)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterable

import httpx

from lifeline_collector.remote_write.config import RemoteWriteConfig
from lifeline_collector.remote_write.prompb import Labels, RemoteSample
from lifeline_collector.remote_write.sender import RemoteWriteStats, Sender, Sleep

# One logger for all of remote-write: operators filter on one name.
log = logging.getLogger("lifeline_collector.remote_write")


class RemoteWriter:
    """Background sender fed by ``submit()``; bounded, drops the oldest when full.

    Use from the collector's event loop: ``start()``, then ``submit()`` per stored sample (safe
    from other threads too), and ``drain()`` at shutdown.
    """

    def __init__(
        self,
        config: RemoteWriteConfig,
        *,
        stats: RemoteWriteStats | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.sender = Sender(config, stats=stats, sleep=sleep, transport=transport)
        self.stats = self.sender.stats
        self._queue: deque[RemoteSample] = deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._settled_before = 0
        self._overflowing = False
        self._overflow_dropped = 0
        self._closing = False
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="remote-write")

    def submit(self, labels: Labels, value: float, ts_ms: int) -> None:
        """Queue one stored sample with its original timestamp. Never blocks, never raises."""
        self.submit_many(((labels, value, ts_ms),))

    def submit_many(self, samples: Iterable[RemoteSample]) -> None:
        if self._closing:
            return
        bound = self.config.queue_max_samples
        with self._lock:
            was_empty = not self._queue
            for sample in samples:
                if len(self._queue) >= bound:
                    self._queue.popleft()
                    self._drop_for_overflow()
                self._queue.append(sample)
            self.stats.pending = len(self._queue) + self._in_flight
            wake = was_empty or len(self._queue) >= self.config.max_samples_per_send
        if wake:
            self._wake()

    def _drop_for_overflow(self) -> None:
        self.stats.dropped += 1
        self._overflow_dropped += 1
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "remote-write queue full (%d samples): dropping the oldest; they remain in the "
                "collector's store but will not reach the TSDB",
                self.config.queue_max_samples,
                extra={"integration": "remote_write"},
            )

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            self._settled_before = self.stats.sent + self.stats.failed
            await self.sender.deliver(batch)
            with self._lock:
                self._in_flight = 0
                self.stats.pending = len(self._queue)

    async def _next_batch(self) -> list[RemoteSample]:
        limit = self.config.max_samples_per_send
        loop = asyncio.get_running_loop()
        while not self._queue:
            if self._closing:
                return []
            self._wakeup.clear()
            if not self._queue and not self._closing:
                await self._wakeup.wait()
        deadline = loop.time() + self.config.batch_wait
        while len(self._queue) < limit and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        with self._lock:
            count = min(limit, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._in_flight = count
            self.stats.pending = len(self._queue) + count
            if self._overflowing and len(self._queue) < self.config.queue_max_samples // 2:
                log.warning(
                    "remote-write queue recovered; %d sample(s) were dropped while it was full",
                    self._overflow_dropped,
                    extra={"integration": "remote_write"},
                )
                self._overflowing = False
                self._overflow_dropped = 0
        return batch

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking samples, send what is queued for up to ``timeout`` s, then stop.

        Whatever could not be sent in time is counted as dropped and logged once.
        """
        self._closing = True
        self._wake()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with self._lock:
            settled = self.stats.sent + self.stats.failed - self._settled_before
            left = len(self._queue) + max(self._in_flight - settled, 0)
            self._queue.clear()
            self._in_flight = 0
            self.stats.pending = 0
        if left:
            self.stats.dropped += left
            log.warning(
                "remote-write stopped with %d sample(s) unsent; they remain in the collector's store",
                left,
                extra={"integration": "remote_write"},
            )
        await self.sender.aclose()
