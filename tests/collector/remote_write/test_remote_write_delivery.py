"""Delivery rules against a real loopback HTTP receiver: retries, rejections, splitting, bounds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lifeline_collector.remote_write.config import RemoteWriteConfig
from lifeline_collector.remote_write.in_memory import RemoteWriter
from lifeline_collector.remote_write.prompb import RemoteSample, series_labels

if TYPE_CHECKING:
    from conftest import Received, Receiver

pytestmark = pytest.mark.system

RTT = series_labels("lifeline_probe_rtt_seconds", {"agent": "pos-07", "site": "north", "target": "cad"})
T0 = 1_700_000_000_000


def _samples(count: int, start: int = T0, step: int = 1000) -> list[RemoteSample]:
    return [(RTT, float(index), start + index * step) for index in range(count)]


def _config(url: str, **overrides: object) -> RemoteWriteConfig:
    values: dict[str, object] = {
        "url": url,
        "timeout": 2.0,
        "batch_wait": 0.02,
        "min_backoff": 0.01,
        "max_backoff": 0.05,
    }
    values.update(overrides)
    return RemoteWriteConfig(**values)  # type: ignore[arg-type]


class RecordingSleep:
    """Records the delays the writer asks for, then yields at once: asserts decisions, not time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def _write(writer: RemoteWriter, samples: list[RemoteSample], drain_timeout: float = 10.0) -> None:
    writer.start()
    writer.submit_many(samples)
    await writer.drain(drain_timeout)


def _scripted(
    *answers: tuple[int, dict[str, str], str],
) -> Callable[[Received], tuple[int, dict[str, str], str]]:
    """Answer with each scripted reply in turn, then 204 for ever."""
    queue = list(answers)

    def respond(_request: Received) -> tuple[int, dict[str, str], str]:
        return queue.pop(0) if queue else (204, {}, "")

    return respond


def test_protocol_headers_auth_and_original_timestamps(receiver: Receiver, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-1\n")
    config = _config(receiver.url, bearer_token_file=str(token), headers=(("X-Scope-OrgID", "dispatch"),))
    writer = RemoteWriter(config)
    samples = _samples(5, start=T0 - 600_000)  # ten minutes old: kept as is, never "now"
    asyncio.run(_write(writer, samples))

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.headers["Content-Encoding"] == "snappy"
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert request.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert request.headers["Authorization"] == "Bearer s3cret-1"
    assert request.headers["X-Scope-OrgID"] == "dispatch"
    assert request.samples == samples
    assert (writer.stats.sent, writer.stats.failed, writer.stats.dropped) == (5, 0, 0)


def test_rotated_token_file_is_read_again(receiver: Receiver, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")

    async def scenario() -> None:
        writer = RemoteWriter(_config(receiver.url, bearer_token_file=str(token)))
        writer.start()
        writer.submit_many(_samples(1))
        while writer.stats.sent < 1:
            await asyncio.sleep(0.01)
        token.write_text("second")
        writer.submit_many(_samples(1, start=T0 + 5000))
        await writer.drain()

    asyncio.run(scenario())
    assert [r.headers["Authorization"] for r in receiver.requests] == ["Bearer first", "Bearer second"]


def test_basic_auth(receiver: Receiver, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pa:ss\n")
    config = _config(receiver.url, basic_auth_username="lifeline", basic_auth_password_file=str(password))
    asyncio.run(_write(RemoteWriter(config), _samples(1)))
    assert receiver.requests[0].headers["Authorization"] == "Basic bGlmZWxpbmU6cGE6c3M="


def test_5xx_is_retried_with_backoff_then_delivered(receiver: Receiver) -> None:
    receiver.responder = _scripted((503, {}, "tsdb restarting"), (500, {}, "internal error"))
    sleep = RecordingSleep()
    writer = RemoteWriter(_config(receiver.url), sleep=sleep)
    samples = _samples(3)
    asyncio.run(_write(writer, samples))

    assert len(receiver.requests) == 3
    assert receiver.requests[0].body == receiver.requests[2].body  # the same request, resent
    assert receiver.requests[2].samples == samples
    assert (writer.stats.sent, writer.stats.failed, writer.stats.retries) == (3, 0, 2)
    assert len(sleep.delays) == 2
    assert all(0.005 <= delay <= 0.05 for delay in sleep.delays)


def test_429_honours_retry_after(receiver: Receiver) -> None:
    receiver.responder = _scripted((429, {"Retry-After": "7"}, "slow down"))
    sleep = RecordingSleep()
    writer = RemoteWriter(_config(receiver.url), sleep=sleep)
    asyncio.run(_write(writer, _samples(2)))
    assert sleep.delays == [7.0]
    assert len(receiver.requests) == 2
    assert writer.stats.sent == 2


def test_408_is_retried_as_every_sender_retries_it(receiver: Receiver) -> None:
    receiver.responder = _scripted((408, {}, "request timeout"))
    sleep = RecordingSleep()
    writer = RemoteWriter(_config(receiver.url), sleep=sleep)
    asyncio.run(_write(writer, _samples(2)))
    assert len(receiver.requests) == 2
    assert (writer.stats.sent, writer.stats.failed, writer.stats.retries) == (2, 0, 1)


def test_4xx_is_not_retried_and_is_counted_and_logged_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.responder = lambda _request: (400, {}, "out of order sample\n")
    writer = RemoteWriter(_config(receiver.url, max_samples_per_send=1))
    with caplog.at_level(logging.DEBUG, logger="lifeline_collector.remote_write"):
        asyncio.run(_write(writer, _samples(3)))

    assert len(receiver.requests) == 3  # one request per one-sample batch, none repeated
    assert (writer.stats.sent, writer.stats.failed, writer.stats.retries) == (0, 3, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "rejected" in r.getMessage()]
    assert len(warnings) == 1
    assert "out of order sample" in warnings[0].getMessage()
    assert "remain in the collector's store" in warnings[0].getMessage()


def test_401_is_not_split_or_retried(receiver: Receiver) -> None:
    receiver.responder = lambda _request: (401, {}, "unauthorized")
    writer = RemoteWriter(_config(receiver.url))
    asyncio.run(_write(writer, _samples(8)))
    assert len(receiver.requests) == 1
    assert (writer.stats.sent, writer.stats.failed) == (0, 8)


def test_a_rejected_batch_is_split_to_deliver_its_good_samples(receiver: Receiver) -> None:
    # Like Prometheus: one too-old sample makes the receiver refuse the whole request.
    def respond(request: Received) -> tuple[int, dict[str, str], str]:
        if any(ts < T0 for _, _, ts in request.samples):
            return 400, {}, "too old sample"
        return 204, {}, ""

    receiver.responder = respond
    old = (RTT, -1.0, T0 - 7_200_000)
    fresh = _samples(7)
    writer = RemoteWriter(_config(receiver.url))
    asyncio.run(_write(writer, [*fresh[:3], old, *fresh[3:]]))

    delivered = sorted(
        s for r in receiver.requests if not any(ts < T0 for *_, ts in r.samples) for s in r.samples
    )
    assert delivered == sorted(fresh)
    assert (writer.stats.sent, writer.stats.failed, writer.stats.retries) == (7, 1, 0)


def test_prometheus_before_2_49_too_old_500_is_a_rejection(receiver: Receiver) -> None:
    receiver.responder = lambda _request: (500, {}, "too old sample")
    writer = RemoteWriter(_config(receiver.url))
    asyncio.run(_write(writer, _samples(1)))
    assert len(receiver.requests) == 1
    assert (writer.stats.failed, writer.stats.retries) == (1, 0)


def test_413_splits_until_the_receiver_accepts(receiver: Receiver) -> None:
    receiver.responder = lambda request: (413, {}, "too large") if len(request.samples) > 2 else (204, {}, "")
    writer = RemoteWriter(_config(receiver.url))
    samples = _samples(9)
    asyncio.run(_write(writer, samples))
    accepted = [s for r in receiver.requests if len(r.samples) <= 2 for s in r.samples]
    assert sorted(accepted) == sorted(samples)
    assert (writer.stats.sent, writer.stats.failed) == (9, 0)


def test_5xx_for_longer_than_retry_limit_gives_up_and_counts_failed(receiver: Receiver) -> None:
    receiver.responder = lambda _request: (503, {}, "down")
    writer = RemoteWriter(_config(receiver.url, retry_limit=0.0))
    asyncio.run(_write(writer, _samples(4)))
    assert len(receiver.requests) == 1
    assert (writer.stats.sent, writer.stats.failed) == (0, 4)


def test_full_queue_drops_the_oldest_counts_and_warns_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(receiver.url, queue_max_samples=5, max_samples_per_send=5)
    samples = _samples(8)

    async def scenario() -> RemoteWriter:
        writer = RemoteWriter(config)
        for labels, value, ts in samples:  # before the sender runs: nothing leaves the queue
            writer.submit(labels, value, ts)
        writer.start()
        await writer.drain()
        return writer

    with caplog.at_level(logging.WARNING, logger="lifeline_collector.remote_write"):
        writer = asyncio.run(scenario())
    assert [s for r in receiver.requests for s in r.samples] == samples[3:]
    assert (writer.stats.sent, writer.stats.dropped) == (5, 3)
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1
    assert "remain in the collector's store" in full[0].getMessage()


def test_unreachable_receiver_is_retried_until_drain_gives_up(
    unused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = unused_url
    writer = RemoteWriter(_config(url, retry_limit=0.0))  # the limit is for answers, not silence

    with caplog.at_level(logging.WARNING, logger="lifeline_collector.remote_write"):
        asyncio.run(_write(writer, _samples(3), drain_timeout=0.3))
    assert writer.stats.retries >= 2
    assert (writer.stats.sent, writer.stats.failed, writer.stats.dropped) == (0, 0, 3)
    assert any("3 sample(s) unsent" in r.getMessage() for r in caplog.records)


def test_submit_never_blocks_or_raises_after_drain(receiver: Receiver) -> None:
    async def scenario() -> RemoteWriter:
        writer = RemoteWriter(_config(receiver.url))
        writer.start()
        await writer.drain()
        writer.submit(RTT, 1.0, T0)
        return writer

    writer = asyncio.run(scenario())
    assert writer.stats.pending == 0
    assert receiver.requests == []


def test_submit_from_another_thread_wakes_the_sender(receiver: Receiver) -> None:
    async def scenario() -> RemoteWriter:
        writer = RemoteWriter(_config(receiver.url, batch_wait=0.01))
        writer.start()
        await asyncio.to_thread(writer.submit_many, _samples(2))
        while writer.stats.sent < 2:
            await asyncio.sleep(0.01)
        await writer.drain()
        return writer

    writer = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert writer.stats.sent == 2


def test_metrics_expose_the_counters(receiver: Receiver) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    receiver.responder = _scripted((400, {}, "bad"), (503, {}, "busy"))
    writer = RemoteWriter(_config(receiver.url, max_samples_per_send=1), sleep=RecordingSleep())
    asyncio.run(_write(writer, _samples(2)))
    registry = CollectorRegistry()
    registry.register(writer.stats)
    text = generate_latest(registry).decode()
    assert 'lifeline_remote_write_samples_total{result="sent"} 1.0' in text
    assert 'lifeline_remote_write_samples_total{result="failed"} 1.0' in text
    assert 'lifeline_remote_write_samples_total{result="dropped"} 0.0' in text
    assert "lifeline_remote_write_retries_total 1.0" in text
    assert "lifeline_remote_write_queue_samples 0.0" in text
