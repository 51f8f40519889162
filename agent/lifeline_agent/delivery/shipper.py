"""Delivers spooled batches to the collector over any path that works; deletes only what was acked.

HTTP semantics follow Alertmanager's notifier: 2xx done (per-item results decide what is
deleted); 408, 429, 5xx and network errors retried with exponential backoff and jitter,
honouring ``Retry-After`` (the one policy of :mod:`lifeline_wire.retry`); 401/403 and other 4xx
keep everything, are not retried on that path for ``refused_pause`` and are logged with the
collector's ``error``/``field`` reason.

A batch leaves the spool only when the collector's own answer — the wire's ``IngestResponse``,
decoded strictly — names that very batch (accepted, duplicate or rejected). Anything else in the
path can answer too: a proxy's 422, a firewall's HTML, another service's JSON. Such an answer
proves nothing about any one batch, so it deletes nothing, whatever its status. 400, 413 and 422
without a per-batch answer split the envelope (the halves that go through are delivered; a
refusal of the whole request, which splitting does not change, stops the splitting after one
half each level) and what is still refused stays spooled and waits ``refused_pause`` on that path.
A part refused while the rest of the request went through is about those batches: they are held
back (in memory) for a growing while, ``refused_pause`` doubling up to ``MAX_HOLD``, so the
batches behind them flow, and are then tried again.

**Paths.** Which endpoint and which way out is tried, and when, is ``paths.Paths``.

**Priority lane.** Priority batches (state changes) leave in an envelope of their own, ahead of
any backlog, and a priority batch cuts any wait short for one attempt on every path.

Over 500 lines on purpose: what is deleted, split, held back or retried is decided from one answer
in one class, so the rule for deleting a batch is read in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.config import AgentSection, CollectorSection
from lifeline_agent.delivery.paths import INGEST_PATH, SERVER_ERROR_BUDGET, DeliveryPath, Paths
from lifeline_agent.delivery.spool import Spool, Spooled
from lifeline_agent.delivery.transport import (
    HttpxTransport,
    Transport,
    failure_kind,
)
from lifeline_agent.discovery import PROC_ROUTE
from lifeline_agent.errors import DeliveryError, RefusedDelivery, RetryableDelivery, SpoolError
from lifeline_agent.logs import bind
from lifeline_agent.recorder import SeriesKey, series_key
from lifeline_wire import SCHEMA_VERSION, Envelope, IngestResponse, WireError, decode_response, encode
from lifeline_wire.retry import Backoff, RetryDecision, decide, parse_retry_after

__all__ = [
    "FAILURE_REASONS",
    "RoundResult",
    "Shipper",
]

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
REFUSED_PAUSE = 60.0
IDLE_POLL = 1.0
FAILBACK_INTERVAL = 60.0  # how often a preferred path that failed is checked again
PRIORITY_RETRY_GAP = 1.0  # a priority batch forces an attempt at most this often
# A priority batch does not wait for a hanging path to time out: the next path starts this long
# after the previous one unless that one answered (RFC 8305's connection attempt delay).
PRIORITY_STAGGER = 0.25
MAX_HOLD = 3600.0  # the longest a batch refused on its own waits before it is tried again
# Answers that may mean "this part of the request is bad": without a per-batch answer the
# envelope is split so the batches that go through are not held back by one that does not.
SPLIT_STATUSES = frozenset({400, 413, 422})
# Closed set of failure reasons (label values of lifeline_agent_send_failures_total).
FAILURE_REASONS = ("network", "tls", "throttled", "server", "auth", "invalid", "too_large", "bad_response")


@dataclass(slots=True)
class ShipperStats:
    sent: int = 0  # batches the collector has (accepted or duplicate)
    rejected: int = 0  # batches the collector refused for good (deleted)
    failures: Counter[str] = field(default_factory=Counter)
    last_ok_ms: int = 0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one shipping round achieved: progress, nothing to send, or seconds to wait."""

    progressed: bool = False
    idle: bool = False
    wait: float = 0.0


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
        *,
        failback_interval: float = FAILBACK_INTERVAL,
        server_budget: float = SERVER_ERROR_BUDGET,
        route_file: str = PROC_ROUTE,
        priority_stagger: float = PRIORITY_STAGGER,
    ) -> None:
        self.agent = agent
        self.collector = collector
        self.spool = spool
        self.token = token
        self.transport: Transport = transport or HttpxTransport(collector)
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.refused_pause = refused_pause
        self.failback_interval = failback_interval
        self.priority_stagger = priority_stagger
        self.paths = Paths(collector, self.backoff, self.clock, route_file, server_budget)
        self.stats = ShipperStats()
        self._wake = asyncio.Event()
        self._last_forced = -PRIORITY_RETRY_GAP
        self._blocked_since: float | None = None
        self._paths_shown: set[tuple[str, str]] = set()
        self._last_crash = ""
        # Batches refused on their own while others went through: spool key -> monotonic time
        # until which they are left out, and how often each was held.
        self._held: dict[int, float] = {}
        self._holds: Counter[int] = Counter()

    def endpoints(self) -> list[str]:
        """Ingest URLs in the order they are tried (public ones only with allow_public)."""
        return [base + INGEST_PATH for base in self.paths.bases]

    def wake(self) -> None:
        """A batch was spooled: ship now (a priority batch also cuts a wait short)."""
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if not self.paths.bases:
            log.warning("no collector endpoint configured: batches stay in the spool")
            return
        failback = asyncio.create_task(self._failback_loop(stop), name="failback")
        force = False
        try:
            while not stop.is_set():
                try:
                    outcome = await self.ship_pending(force=force)
                except SpoolError as exc:
                    log.error("spool failed: %s", exc)
                    await _sleep_unless(stop, self.backoff.next())
                    continue
                except Exception as exc:
                    # Broad on purpose: nothing supervises this task, so a bug that escapes one
                    # round would end delivery, silently, for as long as the agent runs while the
                    # spool fills. The round is logged with its traceback and tried again later.
                    self._crashed(exc)
                    await _sleep_unless(stop, self.backoff.next())
                    continue
                force = False
                if outcome.progressed:
                    self.backoff.reset()
                    self._unblocked()
                elif outcome.idle:
                    await self._idle(stop)
                else:
                    force = await self._pause(stop, outcome.wait)
        finally:
            failback.cancel()
            await asyncio.gather(failback, return_exceptions=True)

    async def ship_pending(self, force: bool = False) -> RoundResult:
        """One envelope of pending batches over the first path that takes it."""
        limit = self.collector.max_batches_per_request
        now = self.clock.monotonic()
        self._held = {key: until for key, until in self._held.items() if until > now}
        items = await asyncio.to_thread(self.spool.pending, limit + len(self._held))
        waiting = bool(items)
        items = [item for item in items if item.key not in self._held][:limit]
        if not items:
            if waiting:  # only held batches are left: come back when the first hold ends
                return RoundResult(wait=max(0.01, min(self._held.values()) - now))
            return RoundResult(idle=True)
        if items[0].batch.priority:  # state changes travel alone: a small, fast request
            items = [item for item in items if item.batch.priority]
            routes = self.paths.order(force)
            if len(routes) > 1:
                return await self._race(routes, items)
        for route in self.paths.order(force):
            try:
                done = await self._deliver(route.url, items, route.interface)
            except RetryableDelivery as exc:
                kind = self._note_failure(exc)
                if kind == "throttled" or (
                    kind in ("server", "bad_response") and self.paths.within_server_budget(route)
                ):
                    delay = self.backoff.next(exc.retry_after)
                    bind(log, endpoint=route.base, status=exc.status).warning(
                        "delivery via %s failed, retrying in %.1fs: %s", route.name, delay, exc.reason
                    )
                    return RoundResult(wait=delay)
                self.paths.failed(route, _failure_text(exc, kind))
                continue
            except RefusedDelivery as exc:
                self._refused(route, exc)
                continue
            self.paths.succeeded(route)
            return RoundResult(progressed=done > 0)
        wait = self.paths.earliest_ready()
        self._blocked(wait)
        return RoundResult(wait=max(wait, 0.01))

    async def _race(self, routes: list[DeliveryPath], items: list[Spooled]) -> RoundResult:
        """Deliver a priority batch over the first path that answers, without waiting for each
        path to time out in turn: the next path starts ``priority_stagger`` after the previous one
        (or at once when it fails). A cut that takes the tunnel down would otherwise hold the state
        change back by the timeout of every dead path before it. The collector counts a batch once
        by (agent, boot, sequence), so a second copy that arrives is answered "duplicate"."""
        running: dict[asyncio.Task[int], DeliveryPath] = {}
        queue = list(routes)
        try:
            while queue or running:
                # One more path each turn: after the stagger, or at once when a path failed.
                if queue:
                    route = queue.pop(0)
                    task = asyncio.ensure_future(self._deliver(route.url, items, route.interface))
                    running[task] = route
                done, _ = await asyncio.wait(
                    running,
                    timeout=self.priority_stagger if queue else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    continue
                for task in done:
                    route = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        self.paths.succeeded(route)
                        return RoundResult(progressed=task.result() > 0)
                    if isinstance(exc, RefusedDelivery):
                        self._refused(route, exc)
                    elif isinstance(exc, RetryableDelivery):
                        self.paths.failed(route, _failure_text(exc, self._note_failure(exc)))
                    else:
                        raise exc
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        wait = self.paths.earliest_ready()
        self._blocked(wait)
        return RoundResult(wait=max(wait, 0.01))

    def _refused(self, route: DeliveryPath, exc: RefusedDelivery) -> None:
        """A 4xx the collector will answer again: keep the batches, rest this path a while."""
        self._note_failure(exc)
        self.paths.failed(
            route,
            f"collector refused the request (HTTP {exc.status}: {exc.reason}); batches kept, "
            f"not retried on this path for {self.refused_pause:.0f}s",
            cooldown=self.refused_pause,
        )

    def _crashed(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.stats.last_error = text
        if text != self._last_crash:
            log.error(
                "a delivery round failed unexpectedly (a bug); batches kept, trying again", exc_info=exc
            )
        self._last_crash = text

    def _blocked(self, wait: float) -> None:
        if self._blocked_since is None:
            self._blocked_since = self.clock.monotonic()
            log.warning(
                "no path to the collector works (%d tried); batches stay in the spool, next try in %.1fs",
                len(self.paths.routes()),
                wait,
            )

    def _unblocked(self) -> None:
        if self._blocked_since is not None:
            log.info(
                "the collector is reachable again after %.0fs", self.clock.monotonic() - self._blocked_since
            )
            self._blocked_since = None

    async def _pause(self, stop: asyncio.Event, delay: float) -> bool:
        """Wait ``delay`` seconds; True (cut short) when a priority batch is waiting to go."""
        deadline = time.monotonic() + delay
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self._wait_wake(stop, remaining)
            if self._wake.is_set():
                self._wake.clear()
                if (
                    time.monotonic() - self._last_forced >= PRIORITY_RETRY_GAP
                    and await self._priority_waiting()
                ):
                    self._last_forced = time.monotonic()
                    return True
        return False

    async def _priority_waiting(self) -> bool:
        try:
            first = await asyncio.to_thread(self.spool.pending, 1)
        except SpoolError:
            return False
        return bool(first) and first[0].batch.priority

    async def _idle(self, stop: asyncio.Event) -> None:
        await self._wait_wake(stop, IDLE_POLL)
        self._wake.clear()

    async def _wait_wake(self, stop: asyncio.Event, timeout: float) -> None:
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _failback_loop(self, stop: asyncio.Event) -> None:
        """Every ``failback_interval``: if a path better than the current one answers, go back to it."""
        while not stop.is_set():
            await _sleep_unless(stop, self.failback_interval)
            current = self.paths.current
            if stop.is_set() or current is None or current.rank == 0:
                continue
            for route in self.paths.routes():
                if route.rank >= current.rank:
                    break
                if await self._answers(route):
                    self.paths.prefer(route)
                    break

    async def _answers(self, route: DeliveryPath) -> bool:
        try:
            response = await self.transport.get(route.base + HEALTH_PATH, route.interface)
        except DeliveryError:
            return False
        return 200 <= response.status < 300

    # -- one delivery ---------------------------------------------------------------------------

    async def ship_once(self, url: str, interface: str = "") -> bool:
        """Send one envelope of the oldest pending batches to ``url``; True if any left the spool.

        Raises DeliveryError subclasses: no fail-over here (``run`` does that).
        """
        items = await asyncio.to_thread(self.spool.pending, self.collector.max_batches_per_request)
        if not items:
            return False
        done = await self._deliver(url, items, interface)
        return done > 0

    async def _deliver(self, url: str, items: list[Spooled], interface: str = "", split: bool = True) -> int:
        """Deliver ``items``; return how many left the spool. Raises DeliveryError subclasses.

        ``split=False`` sends ``items`` as one request even when a 400/413/422 would split it."""
        envelope = Envelope(
            version=SCHEMA_VERSION,
            batches=[item.batch for item in items],
            sent_ms=now_ms(self.clock),
            site=self.agent.site,
            position=self.agent.position,
        )
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        response = await self.transport.post(url, encode(envelope), headers, interface)
        status = response.status
        if 200 <= status < 300:
            answer = lifeline_answer(response.body)
            if answer is None:
                raise RetryableDelivery(
                    url, "malformed response (not a Lifeline answer); batches kept", status
                )
            return await self._apply_results(url, items, answer, status)
        if status in SPLIT_STATUSES:
            answer = lifeline_answer(response.body)
            if answer is not None:  # the collector itself answered per batch
                return await self._apply_results(url, items, answer, status)
            reason = _reason_text(response.body)
            if len(items) > 1 and split:
                self.stats.failures["too_large" if status == 413 else "invalid"] += 1
                return await self._split(url, items, interface, status, reason)
            raise RefusedDelivery(url, f"{reason} (no per-batch answer)", status)
        reason = _reason_text(response.body)
        if decide(status) is RetryDecision.RETRY:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock.time())
            raise RetryableDelivery(url, reason, status, retry_after)
        if 400 <= status < 500:
            raise RefusedDelivery(url, reason, status)
        raise RetryableDelivery(url, f"unexpected answer: {reason}", status)

    async def _split(self, url: str, items: list[Spooled], interface: str, status: int, reason: str) -> int:
        """Deliver ``items`` in two halves after the whole was refused without a per-batch answer.

        When the first half is refused as a whole, the second goes unsplit: if it is refused too,
        the refusal is about every request (a proxy, a limit on the agent), not one batch, and
        trying each batch alone would only multiply requests. Raises RefusedDelivery when nothing
        got through; what got through is kept delivered either way."""
        half = len(items) // 2
        bind(log, endpoint=url, status=status).debug(
            "splitting %d batches into %d + %d: %s", len(items), half, len(items) - half, reason
        )
        try:
            done = await self._deliver(url, items[:half], interface)
        except RefusedDelivery as exc:
            done = await self._deliver(url, items[half:], interface, split=False)
            self._hold(items[:half], exc)  # the rest went through: the refusal is about these
            return done
        try:
            return done + await self._deliver(url, items[half:], interface)
        except RefusedDelivery as exc:
            if not done:
                raise
            self._hold(items[half:], exc)
            return done

    def _hold(self, items: list[Spooled], exc: RefusedDelivery) -> None:
        """Leave ``items`` out of requests for a while (kept in the spool): they were refused
        without a per-batch answer while the rest of their request went through."""
        now = self.clock.monotonic()
        for item in items:
            delay = min(MAX_HOLD, self.refused_pause * 2.0 ** self._holds[item.key])
            self._holds[item.key] += 1
            self._held[item.key] = now + delay
            log.warning(
                "batch %s/%d refused without a per-batch answer (HTTP %s: %s) while others went "
                "through: kept, tried again in %.0fs",
                item.batch.boot_id,
                item.batch.seq,
                exc.status,
                exc.reason,
                delay,
                extra={"boot_id": item.batch.boot_id, "seq": item.batch.seq},
            )

    async def _apply_results(
        self, url: str, items: list[Spooled], answer: IngestResponse, status: int
    ) -> int:
        """Delete the batches the answer names; the others stay. Raises when it names none."""
        by_id = {(item.batch.boot_id, item.batch.seq): item for item in items}
        acked: list[int] = []
        for result in answer.results:
            item = by_id.pop((result.boot_id, result.seq), None)
            if item is None:
                continue
            acked.append(item.key)
            if result.status == "rejected":
                self._reject([item], result.reason or "no reason given")
            else:
                self.stats.sent += 1
        await asyncio.to_thread(self.spool.ack, acked)
        for key in acked:
            self._holds.pop(key, None)
        if acked:
            self.stats.last_ok_ms = now_ms(self.clock)
        if by_id:
            bind(log, endpoint=url).warning(
                "collector answered for %d of %d batches; the rest stay spooled", len(acked), len(items)
            )
        if not acked:
            if status >= 400:
                raise RefusedDelivery(url, "the collector's answer names none of the batches", status)
            raise RetryableDelivery(url, "the collector acknowledged none of the batches", status)
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

    def _note_failure(self, exc: DeliveryError) -> str:
        self.stats.last_error = str(exc)
        if exc.status is None:
            kind = failure_kind(exc)
        elif exc.status == 429:
            kind = "throttled"
        elif exc.status >= 500 or exc.status == 408:
            kind = "server"
        elif exc.status in (401, 403):
            kind = "auth"
        elif 200 <= exc.status < 300:
            kind = "bad_response"
        else:
            kind = "invalid"
        self.stats.failures[kind] += 1
        return kind

    # -- self metrics ---------------------------------------------------------------------------

    def live_values(self) -> dict[SeriesKey, float]:
        """The path in use: ``lifeline_agent_delivery_path_info{endpoint, path}`` 1, the others 0.

        A path shown once stays listed (at 0) when it goes away (the backup interface unplugged):
        these values are also recorded and sent, and a path left at its last value of 1 would
        read as in use for as long as the agent runs."""
        current = self.paths.current
        in_use = (current.base, current.via) if current is not None else None
        listed = {(route.base, route.via) for route in self.paths.routes()}
        self._paths_shown |= listed
        values: dict[SeriesKey, float] = {}
        for base, via in sorted(self._paths_shown):
            key = series_key("lifeline_agent_delivery_path_info", {"endpoint": base, "path": via})
            values[key] = 1.0 if (base, via) == in_use and (base, via) in listed else 0.0
        return values

    async def aclose(self) -> None:
        await self.transport.aclose()


def lifeline_answer(body: bytes) -> IngestResponse | None:
    """The collector's per-batch answer in ``body``, decoded strictly; None for anything else."""
    try:
        return decode_response(body)
    except WireError:
        return None


def _failure_text(exc: RetryableDelivery, kind: str) -> str:
    if kind == "tls":
        return f"{exc.reason}; batches kept"
    if exc.status is not None:
        return f"HTTP {exc.status}: {exc.reason}"
    return exc.reason


def _reason_text(body: bytes, limit: int = 300) -> str:
    """The collector's reason from an error body: ``error`` and ``field`` of its JSON, else the text."""
    text = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            field_name = data.get("field")
            text = data["error"] + (f" (field {field_name})" if isinstance(field_name, str) else "")
    return (text[:limit] + "…") if len(text) > limit else text or "(empty body)"


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
