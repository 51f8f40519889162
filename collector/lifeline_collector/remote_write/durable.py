"""The durable feeding mode: ``DurableRemoteWriter`` reads the store's samples after a cursor
(``SampleSource``) and keeps the id of the last sample sent (``FileCursor``, or a cursor in the
shared database), so a collector restart or a long receiver outage resends from the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from lifeline_collector.remote_write.config import RemoteWriteConfig
from lifeline_collector.remote_write.prompb import Labels
from lifeline_collector.remote_write.sender import RemoteWriteStats, Sender, Sleep

# One logger for all of remote-write: operators filter on one name.
log = logging.getLogger("lifeline_collector.remote_write")


class SampleSource(Protocol):
    """The store's samples table as a cursor: rows with an increasing id, oldest first."""

    def samples_after(self, cursor: int, limit: int) -> list[tuple[int, Labels, float, int]]:
        """Up to ``limit`` rows ``(id, labels, value, ts_ms)`` with ``id > cursor``, by id."""
        ...


class CursorStore(Protocol):
    def load(self) -> int: ...

    def save(self, cursor: int) -> None: ...


@dataclass(slots=True)
class FileCursor:
    """The last sample id sent, in a small file replaced atomically (survives kill -9)."""

    path: Path
    _last_saved: int | None = field(default=None, init=False)

    def load(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            value = int(text)
        except ValueError:
            log.warning(
                "remote-write cursor %s is unreadable (%r); resending the store from the start",
                self.path,
                text[:40],
                extra={"integration": "remote_write"},
            )
            return 0
        return max(value, 0)

    def save(self, cursor: int) -> None:
        if cursor == self._last_saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(f"{cursor}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._last_saved = cursor


class DurableRemoteWriter:
    """Sends everything the store holds after the saved cursor; resumes there after a restart.

    ``wake()`` after storing new samples makes it look at once; otherwise it polls every
    ``batch_wait``. ``samples_after`` is called on the event loop, so it must be a short indexed
    query (it is bounded by ``max_samples_per_send``). Delivery is at least once: a crash between
    a send and the cursor save resends that batch, which the receiver takes as the same samples.
    """

    def __init__(
        self,
        config: RemoteWriteConfig,
        source: SampleSource,
        cursor: CursorStore | None = None,
        *,
        stats: RemoteWriteStats | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if cursor is None:
            if not config.cursor_file:
                raise ValueError("remote_write.cursor_file is empty: durable mode needs it")
            cursor = FileCursor(Path(config.cursor_file))
        self.config = config
        self.source = source
        self.cursor_store = cursor
        self.sender = Sender(config, stats=stats, sleep=sleep, transport=transport)
        self.stats = self.sender.stats
        self.cursor = 0
        self._closing = False
        self._wakeup = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.cursor = self.cursor_store.load()
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="remote-write-durable")

    def wake(self) -> None:
        """New samples were stored (safe from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wakeup.set)

    async def _run(self) -> None:
        limit = self.config.max_samples_per_send
        while True:
            rows = self.source.samples_after(self.cursor, limit)
            if not rows:
                if self._closing:
                    return
                # Idle: look again when ingest stores something, or poll every batch_wait.
                await self._wait(self._wakeup, self.config.batch_wait)
                continue
            if len(rows) < limit and not self._closing:
                # A partial batch: give the store batch_wait to gather more (wake() does not cut
                # this short, or every stored sample would make its own request).
                await self._wait(self._closed, self.config.batch_wait)
                rows = self.source.samples_after(self.cursor, limit)
            self.stats.pending = len(rows)
            await self.sender.deliver([(labels, value, ts_ms) for _, labels, value, ts_ms in rows])
            self.cursor = rows[-1][0]
            self.cursor_store.save(self.cursor)
            self.stats.pending = 0

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        event.clear()
        if self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def drain(self, timeout: float = 10.0) -> None:
        """Send what the store holds for up to ``timeout`` s; the rest goes after the restart."""
        self._closing = True
        self._wakeup.set()
        self._closed.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                log.warning(
                    "remote-write stopped before the store was fully sent; it resumes after id %d",
                    self.cursor,
                    extra={"integration": "remote_write"},
                )
        self.stats.pending = 0
        await self.sender.aclose()
