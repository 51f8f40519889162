"""Remote-write of stored samples to Prometheus or a compatible TSDB, with their original timestamps.

The collector stores every sample first (SQLite) and then hands it here. Two feeding modes share
one sender:

* ``RemoteWriter`` — an in-memory queue fed by ``submit()`` as ingest stores samples. It never
  blocks ingest: past its bound the oldest samples are dropped and counted (they stay in the store).
* ``DurableRemoteWriter`` — reads the store's samples table through a cursor (``SampleSource``)
  and persists the last id sent (``FileCursor``), so a collector restart resends from the store.

Delivery follows the remote-write 1.0 spec: 2xx done; 429/5xx and an unreachable receiver retried
with backoff and jitter, honouring ``Retry-After``; other 4xx not retried. A 400 (e.g. one sample
too old) rejects the *whole* request in Prometheus, so a rejected batch is split in time order a
few times to deliver what can be delivered; 413 splits it too. Prometheus before 2.49 answers
"too old sample" with 500 (prometheus/prometheus#13334): that is treated as the rejection it is.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Protocol

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lifeline_collector import prompb
from lifeline_collector.prompb import Labels
from lifeline_wire.catalog import CATALOG
from lifeline_wire.tomlcfg import Section

log = logging.getLogger(__name__)

# (labels incl. __name__, value, timestamp in ms) — labels from ``series_labels``.
RemoteSample = tuple[Labels, float, int]

PROTOCOL_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "lifeline-collector",
}
# Headers an operator may not override: they define the protocol or carry the credentials.
_RESERVED_HEADERS = {name.lower() for name in PROTOCOL_HEADERS} | {"authorization", "content-length"}
# Bodies of 500 answers that Prometheus < 2.49 gives for samples it will never accept (#13334).
_PERMANENT_500_REASONS = ("too old sample", "out of bounds", "out of order sample", "duplicate sample")
# How many times a rejected (400) batch is halved to save its good samples: ≤ 2^(n+1)-1 requests.
MAX_SPLIT_DEPTH = 4
# The same rejection is logged as a warning again only after this long (repeats go to debug).
_REWARN_AFTER = 600.0
# Never wait longer than this for one Retry-After, whatever the receiver says.
MAX_RETRY_AFTER = 600.0


def series_labels(name: str, labels: Mapping[str, str]) -> Labels:
    """The label set of one series: ``name`` as ``__name__`` plus ``labels``, sorted per the spec."""
    return prompb.normalize_labels({**labels, prompb.METRIC_NAME_LABEL: name})


# ---------------------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    """``[remote_write]`` in the collector config. An empty ``url`` turns remote-write off."""

    url: str = ""
    timeout: float = 10.0
    bearer_token_file: str = ""
    basic_auth_username: str = ""
    basic_auth_password_file: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    max_samples_per_send: int = 2000
    batch_wait: float = 1.0
    queue_max_samples: int = 100_000
    min_backoff: float = 0.5
    max_backoff: float = 30.0
    # A receiver that keeps answering 429/5xx for one batch this long is given up on (the batch
    # counts as failed); an unreachable receiver is retried without limit.
    retry_limit: float = 300.0
    # Durable mode: where the id of the last stored sample sent is kept. Empty = in-memory queue.
    cursor_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def durable(self) -> bool:
        return bool(self.cursor_file)


def read_remote_write(section: Section) -> RemoteWriteConfig:
    """Read the ``[remote_write]`` table; problems go to the section's collector with their path."""
    default = RemoteWriteConfig()
    url = section.text("url", default.url, pattern=r"https?://[^\s/]+(/\S*)?")
    timeout = section.duration("timeout", default.timeout, min=0.1, max=300.0)
    token_file = section.text("bearer_token_file", default.bearer_token_file)
    user = section.text("basic_auth_username", default.basic_auth_username)
    password_file = section.text("basic_auth_password_file", default.basic_auth_password_file)
    headers = section.str_map("headers")
    max_samples = section.integer("max_samples_per_send", default.max_samples_per_send, min=1, max=100_000)
    batch_wait = section.duration("batch_wait", default.batch_wait, min=0.01, max=60.0)
    queue_max = section.integer("queue_max_samples", default.queue_max_samples, min=1)
    min_backoff = section.duration("min_backoff", default.min_backoff, min=0.01, max=60.0)
    max_backoff = section.duration("max_backoff", default.max_backoff, min=0.01, max=3600.0)
    retry_limit = section.duration("retry_limit", default.retry_limit, min=0.0)
    cursor_file = section.text("cursor_file", default.cursor_file)
    section.finish()

    if token_file and (user or password_file):
        section.error("bearer_token_file", "use either bearer_token_file or basic_auth_*, not both")
    if bool(user) != bool(password_file):
        section.error("basic_auth_username", "basic_auth_username and basic_auth_password_file go together")
    for name in headers:
        if name.lower() in _RESERVED_HEADERS:
            section.problems.add(
                f"{section.key('headers')}.{name}", "is set by remote-write itself and cannot be overridden"
            )
    if max_backoff < min_backoff:
        section.error("max_backoff", f"must be ≥ min_backoff ({min_backoff:g}s)")
    if queue_max < max_samples:
        section.error("queue_max_samples", f"must be ≥ max_samples_per_send ({max_samples})")
    if cursor_file and not url:
        section.error("cursor_file", "needs url")
    return RemoteWriteConfig(
        url=url,
        timeout=timeout,
        bearer_token_file=token_file,
        basic_auth_username=user,
        basic_auth_password_file=password_file,
        headers=tuple(sorted(headers.items())),
        max_samples_per_send=max_samples,
        batch_wait=batch_wait,
        queue_max_samples=queue_max,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        retry_limit=retry_limit,
        cursor_file=cursor_file,
    )


# --------------------------------------------------------------------------------------- metrics


@dataclass(slots=True, eq=False)  # hashed by identity: a prometheus_client registry keys on it
class RemoteWriteStats:
    """Counters behind ``lifeline_remote_write_*``; also a prometheus_client custom collector."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    pending: int = 0

    def collect(self) -> Iterator[Metric]:
        samples = CounterMetricFamily(
            "lifeline_remote_write_samples_total",
            CATALOG["lifeline_remote_write_samples_total"].help,
            labels=["result"],
        )
        for result, count in (("sent", self.sent), ("failed", self.failed), ("dropped", self.dropped)):
            samples.add_metric([result], count)
        yield samples
        yield CounterMetricFamily(
            "lifeline_remote_write_retries_total",
            CATALOG["lifeline_remote_write_retries_total"].help,
            value=self.retries,
        )
        yield GaugeMetricFamily(
            "lifeline_remote_write_queue_samples",
            CATALOG["lifeline_remote_write_queue_samples"].help,
            value=self.pending,
        )


# ---------------------------------------------------------------------------------------- sender


class Outcome(Enum):
    SENT = "sent"
    REJECTED = "rejected"  # the receiver refuses these samples; retrying cannot help
    TOO_LARGE = "too_large"  # 413: smaller requests may pass
    GAVE_UP = "gave_up"  # 429/5xx for longer than retry_limit


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: Outcome | None  # None: retry
    status: int | None
    reason: str
    retry_after: float | None = None


Sleep = Callable[[float], Awaitable[None]]


class Sender:
    """POSTs batches to one receiver with the spec's retry rules and keeps the counters."""

    def __init__(
        self,
        config: RemoteWriteConfig,
        *,
        stats: RemoteWriteStats | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not config.url:
            raise ValueError("remote_write.url is empty: remote-write is disabled")
        self.config = config
        self.stats = stats if stats is not None else RemoteWriteStats()
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=config.timeout, transport=transport)
        self._last_problem: tuple[str, int | None, str] | None = None
        self._last_warned = 0.0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, samples: Sequence[RemoteSample]) -> None:
        """Send ``samples`` until each is either accepted or counted as failed.

        Returns only when that is settled; an unreachable receiver is retried until it answers
        (the caller bounds that at shutdown by cancelling).
        """
        if samples:
            await self._deliver(sorted(samples, key=lambda sample: sample[2]), depth=0)

    async def _deliver(self, samples: list[RemoteSample], depth: int) -> None:
        answer = await self._send_with_retry(samples)
        if answer.outcome is Outcome.SENT:
            self.stats.sent += len(samples)
            return
        splittable = len(samples) > 1 and (
            answer.outcome is Outcome.TOO_LARGE
            or (answer.outcome is Outcome.REJECTED and answer.status == 400 and depth < MAX_SPLIT_DEPTH)
        )
        if splittable:
            # Halves in time order: a receiver rejects old samples, so the newer half often passes.
            middle = len(samples) // 2
            await self._deliver(samples[:middle], depth + 1)
            await self._deliver(samples[middle:], depth + 1)
            return
        self.stats.failed += len(samples)
        self._note_problem(
            "rejected" if answer.outcome is not Outcome.GAVE_UP else "gave up",
            answer.status,
            answer.reason,
            len(samples),
        )

    def _note_problem(self, what: str, status: int | None, reason: str, count: int) -> None:
        """One warning per distinct problem, not one per batch; repeats go to debug."""
        key = (what, status, reason)
        now = time.monotonic()
        repeat = key == self._last_problem and now - self._last_warned < _REWARN_AFTER
        level = logging.DEBUG if repeat else logging.WARNING
        if not repeat:
            self._last_problem, self._last_warned = key, now
        log.log(
            level,
            "remote-write %s %d sample(s): HTTP %s %s; they remain in the collector's store",
            what,
            count,
            status if status is not None else "-",
            reason,
            extra={"integration": "remote_write", "status": status, "samples": count},
        )

    async def _send_with_retry(self, samples: list[RemoteSample]) -> _Answer:
        body = prompb.encode(prompb.group(samples))
        attempt = 0
        first_refusal: float | None = None
        while True:
            answer = await self._post(body)
            if answer.outcome is not None:
                return answer
            now = time.monotonic()
            if answer.status is not None:  # the receiver answered 429/5xx: bounded by retry_limit
                first_refusal = now if first_refusal is None else first_refusal
                if now - first_refusal >= self.config.retry_limit:
                    return _Answer(Outcome.GAVE_UP, answer.status, answer.reason)
            delay = self._backoff(attempt, answer.retry_after)
            attempt += 1
            self.stats.retries += 1
            log.debug(
                "remote-write retry in %.2fs after HTTP %s %s",
                delay,
                answer.status if answer.status is not None else "-",
                answer.reason,
                extra={"integration": "remote_write", "status": answer.status},
            )
            if attempt == 1 or attempt % 20 == 0:
                log.warning(
                    "remote-write receiver not accepting (HTTP %s %s); retrying",
                    answer.status if answer.status is not None else "-",
                    answer.reason,
                    extra={"integration": "remote_write", "status": answer.status},
                )
            await self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        base = min(self.config.min_backoff * (2.0 ** min(attempt, 30)), self.config.max_backoff)
        # Jitter spreads replicas' retries apart; not security relevant.
        return base / 2 + random.uniform(0, base / 2)  # noqa: S311

    async def _post(self, body: bytes) -> _Answer:
        try:
            headers = self._headers()
        except OSError as exc:
            return _Answer(None, None, f"cannot read credentials file: {exc.strerror or exc}")
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            return _Answer(None, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        status = response.status_code
        reason = _reason(response)
        if 200 <= status < 300:
            return _Answer(Outcome.SENT, status, "")
        if status == 413:
            return _Answer(Outcome.TOO_LARGE, status, reason)
        if status == 429 or status >= 500:
            if status == 500 and any(text in reason.lower() for text in _PERMANENT_500_REASONS):
                return _Answer(Outcome.REJECTED, 400, f"{reason} (answered 500)")
            return _Answer(None, status, reason, _retry_after(response.headers.get("Retry-After")))
        return _Answer(Outcome.REJECTED, status, reason)

    def _headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        headers.update(PROTOCOL_HEADERS)
        # Read on every request so a rotated token or password is picked up without a restart.
        if self.config.bearer_token_file:
            token = Path(self.config.bearer_token_file).read_text(encoding="utf-8").strip()
            headers["Authorization"] = f"Bearer {token}"
        elif self.config.basic_auth_username:
            password = Path(self.config.basic_auth_password_file).read_text(encoding="utf-8").strip()
            pair = f"{self.config.basic_auth_username}:{password}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
        return headers


def _reason(response: httpx.Response) -> str:
    text = response.text.strip().splitlines()
    first = text[0] if text else response.reason_phrase
    return first[:200]


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# ------------------------------------------------------------------------------ in-memory writer


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


# -------------------------------------------------------------------------------- durable writer


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
