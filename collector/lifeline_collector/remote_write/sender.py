"""The sender: POSTs batches of samples to one receiver and settles each sample as sent or failed.

Delivery follows the remote-write 1.0 spec: 2xx done; 429/5xx and an unreachable receiver retried
with backoff and jitter, honouring ``Retry-After`` (the one policy of :mod:`lifeline_wire.retry`,
which retries 408 too); other 4xx not retried. A 400 (e.g. one sample
too old) rejects the *whole* request in Prometheus, so a rejected batch is split in time order a
few times to deliver what can be delivered; 413 splits it too. Prometheus before 2.49 answers
"too old sample" with 500 (prometheus/prometheus#13334): that is treated as the rejection it is.
The counters behind ``lifeline_remote_write_*`` are kept here too.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lifeline_collector.remote_write import prompb
from lifeline_collector.remote_write.config import RemoteWriteConfig
from lifeline_collector.remote_write.prompb import PROTOCOL_HEADERS, RemoteSample
from lifeline_wire.catalog import CATALOG
from lifeline_wire.retry import RetryDecision, RetryPolicy, decide, parse_retry_after

# One logger for all of remote-write: operators filter on one name.
log = logging.getLogger("lifeline_collector.remote_write")

# Bodies of 500 answers that Prometheus < 2.49 gives for samples it will never accept (#13334).
_PERMANENT_500_REASONS = ("too old sample", "out of bounds", "out of order sample", "duplicate sample")
# How many times a rejected (400) batch is halved to save its good samples: ≤ 2^(n+1)-1 requests.
MAX_SPLIT_DEPTH = 4
# The same rejection is logged as a warning again only after this long (repeats go to debug).
_REWARN_AFTER = 600.0


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
        policy = RetryPolicy(initial=self.config.min_backoff, maximum=self.config.max_backoff)
        return policy.delay(attempt, retry_after)

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
        decision = decide(status)
        if decision is RetryDecision.DONE:
            return _Answer(Outcome.SENT, status, "")
        if status == 413:
            return _Answer(Outcome.TOO_LARGE, status, reason)
        if decision is RetryDecision.RETRY:
            if status == 500 and any(text in reason.lower() for text in _PERMANENT_500_REASONS):
                return _Answer(Outcome.REJECTED, 400, f"{reason} (answered 500)")
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            return _Answer(None, status, reason, retry_after)
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
