"""Delivers spooled batches to the collector and deletes only what it acknowledged.

HTTP semantics follow Alertmanager's notifier: 2xx done (per-item results decide what is
deleted); 429 and 5xx and network errors retried with exponential backoff and jitter, honouring
``Retry-After``; 413 splits the envelope; 400/422 split down to the one bad batch, which is
dropped and counted; 401/403 and other 4xx keep everything and pause, logged with the collector's
reason. A batch leaves the spool only when the collector has it or has refused that very batch.

``Transport`` is the seam for issue 5 (endpoint fail-over, binding to the backup interface).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import ssl
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from lifeline_agent import __version__
from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.config import AgentSection, CollectorSection
from lifeline_agent.errors import DeliveryError, RefusedDelivery, RetryableDelivery, SpoolError
from lifeline_agent.logs import bind
from lifeline_agent.spool import Spool, Spooled
from lifeline_wire import SCHEMA_VERSION, Envelope, WireError, decode_response, encode

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 600.0
REFUSED_PAUSE = 60.0
IDLE_POLL = 1.0
# Closed set of failure reasons (label values of lifeline_agent_send_failures_total).
FAILURE_REASONS = ("network", "throttled", "server", "auth", "invalid", "too_large", "bad_response")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; raise RetryableDelivery when no HTTP answer came back."""

    async def aclose(self) -> None: ...


def ssl_context(collector: CollectorSection) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=collector.ca_file or None)
    if collector.client_cert:
        context.load_cert_chain(collector.client_cert, collector.client_key)
    return context


class HttpxTransport:
    """One kept-alive httpx client for all requests."""

    def __init__(self, collector: CollectorSection) -> None:
        self._client = httpx.AsyncClient(
            timeout=collector.timeout,
            verify=ssl_context(collector),
            headers={"User-Agent": f"lifeline-agent/{__version__}"},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        try:
            resp = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.TransportError as exc:
            raise RetryableDelivery(url, f"{type(exc).__name__}: {exc}") from exc
        return Response(resp.status_code, resp.headers, resp.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


class Backoff:
    """Exponential backoff with jitter: ``initial·2ⁿ`` capped at ``maximum``, scaled by 0.5–1.0."""

    def __init__(self, initial: float = 0.5, maximum: float = 60.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def next(self, retry_after: float | None = None) -> float:
        delay = min(self.maximum, self.initial * 2.0**self.attempt) * self._rng.uniform(0.5, 1.0)
        self.attempt += 1
        return max(delay, retry_after) if retry_after is not None else delay

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class ShipperStats:
    sent: int = 0  # batches the collector has (accepted or duplicate)
    rejected: int = 0  # batches the collector refused for good (deleted)
    failures: Counter[str] = field(default_factory=Counter)
    last_ok_ms: int = 0
    last_error: str = ""


class Shipper:
    def __init__(
        self,
        agent: AgentSection,
        collector: CollectorSection,
        spool: Spool,
        token: str,
        transport: Transport | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        refused_pause: float = REFUSED_PAUSE,
    ) -> None:
        self.agent = agent
        self.collector = collector
        self.spool = spool
        self.token = token
        self.transport: Transport = transport or HttpxTransport(collector)
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.refused_pause = refused_pause
        self.stats = ShipperStats()
        self._wake = asyncio.Event()

    def endpoints(self) -> list[str]:
        """Ingest URLs in the order to try; issue 5 walks this list and the backup path."""
        return [
            f"{ep.url}/api/v1/ingest"
            for ep in self.collector.endpoints
            if not ep.public or self.collector.allow_public
        ]

    def wake(self) -> None:
        """Ship now (a batch was spooled), unless waiting out a backoff."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        urls = self.endpoints()
        if not urls:
            log.warning("no collector endpoint configured: batches stay in the spool")
            return
        while not stop.is_set():
            try:
                progressed = await self.ship_once(urls[0])
            except RetryableDelivery as exc:
                delay = self.backoff.next(exc.retry_after)
                self._note_failure(exc)
                bind(log, endpoint=exc.url, status=exc.status).warning(
                    "delivery failed, retrying in %.1fs: %s", delay, exc.reason
                )
                await _sleep_unless(stop, delay)
                continue
            except RefusedDelivery as exc:
                self._note_failure(exc)
                bind(log, endpoint=exc.url, status=exc.status).error(
                    "collector refused the request (not retried for %.0fs; batches kept): %s",
                    self.refused_pause,
                    exc.reason,
                )
                await _sleep_unless(stop, self.refused_pause)
                continue
            except SpoolError as exc:
                log.error("spool failed: %s", exc)
                await _sleep_unless(stop, self.backoff.next())
                continue
            self.backoff.reset()
            if not progressed:
                await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=IDLE_POLL, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    async def ship_once(self, url: str) -> bool:
        """Send one envelope of the oldest pending batches; True if any left the spool."""
        items = await asyncio.to_thread(self.spool.pending, self.collector.max_batches_per_request)
        if not items:
            return False
        done = await self._deliver(url, items)
        return done > 0

    async def _deliver(self, url: str, items: list[Spooled]) -> int:
        """Deliver ``items``; return how many left the spool. Raises DeliveryError subclasses."""
        envelope = Envelope(
            version=SCHEMA_VERSION,
            batches=[item.batch for item in items],
            sent_ms=now_ms(self.clock),
            site=self.agent.site,
            position=self.agent.position,
        )
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        response = await self.transport.post(url, encode(envelope), headers)
        status = response.status
        reason = _reason_text(response.body)
        if 200 <= status < 300:
            return await self._apply_results(url, items, response.body)
        if status == 413 or status in (400, 422):
            if len(items) > 1:
                self.stats.failures["too_large" if status == 413 else "invalid"] += 1
                half = len(items) // 2
                bind(log, endpoint=url, status=status).info(
                    "splitting %d batches into %d + %d: %s", len(items), half, len(items) - half, reason
                )
                return await self._deliver(url, items[:half]) + await self._deliver(url, items[half:])
            # One batch the collector will never take: keeping it would block every later one.
            item = items[0]
            self._reject([item], f"HTTP {status}: {reason}")
            await asyncio.to_thread(self.spool.ack, [item.key])
            return 1
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock.time())
            raise RetryableDelivery(url, reason, status, retry_after)
        if 400 <= status < 500:
            raise RefusedDelivery(url, reason, status)
        raise RetryableDelivery(url, f"unexpected answer: {reason}", status)

    async def _apply_results(self, url: str, items: list[Spooled], body: bytes) -> int:
        try:
            results = decode_response(body).results
        except WireError as exc:
            raise RetryableDelivery(url, f"malformed response ({exc}); batches kept", 200) from exc
        by_id = {(item.batch.boot_id, item.batch.seq): item for item in items}
        acked: list[int] = []
        rejected: list[Spooled] = []
        for result in results:
            item = by_id.pop((result.boot_id, result.seq), None)
            if item is None:
                continue
            acked.append(item.key)
            if result.status == "rejected":
                rejected.append(item)
                self._reject([item], result.reason or "no reason given")
            else:
                self.stats.sent += 1
        await asyncio.to_thread(self.spool.ack, acked)
        if acked:
            self.stats.last_ok_ms = now_ms(self.clock)
        if by_id:
            bind(log, endpoint=url).warning(
                "collector answered for %d of %d batches; the rest stay spooled", len(acked), len(items)
            )
        if not acked:
            raise RetryableDelivery(url, "the collector acknowledged none of the batches", 200)
        return len(acked)

    def _reject(self, items: list[Spooled], reason: str) -> None:
        for item in items:
            self.stats.rejected += 1
            log.error(
                "collector rejected batch %s/%d: %s (deleted)",
                item.batch.boot_id,
                item.batch.seq,
                reason,
                extra={"boot_id": item.batch.boot_id, "seq": item.batch.seq},
            )

    def _note_failure(self, exc: DeliveryError) -> None:
        self.stats.last_error = str(exc)
        if exc.status is None:
            kind = "network"
        elif exc.status == 429:
            kind = "throttled"
        elif exc.status >= 500:
            kind = "server"
        elif exc.status in (401, 403):
            kind = "auth"
        elif 200 <= exc.status < 300:
            kind = "bad_response"
        else:
            kind = "invalid"
        self.stats.failures[kind] += 1

    async def aclose(self) -> None:
        await self.transport.aclose()


def _reason_text(body: bytes, limit: int = 300) -> str:
    """The collector's reason from an error body, trimmed; it may be JSON or text."""
    text = body.decode("utf-8", "replace").strip()
    return (text[:limit] + "…") if len(text) > limit else text or "(empty body)"


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
