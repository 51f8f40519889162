"""Against a real Prometheus: late samples land at their original time, too-old ones are counted."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from lifeline_collector.remote_write.config import RemoteWriteConfig
from lifeline_collector.remote_write.in_memory import RemoteWriter
from lifeline_collector.remote_write.prompb import RemoteSample, series_labels

if TYPE_CHECKING:
    from conftest import Prometheus

pytestmark = pytest.mark.system

STEP_MS = 15_000


def _writer(prometheus: Prometheus) -> RemoteWriter:
    return RemoteWriter(RemoteWriteConfig(url=prometheus.write_url, timeout=5.0, batch_wait=0.05))


def _send(prometheus: Prometheus, samples: list[RemoteSample]) -> RemoteWriter:
    async def run() -> RemoteWriter:
        writer = _writer(prometheus)
        writer.start()
        writer.submit_many(samples)
        await writer.drain(20.0)
        return writer

    return asyncio.run(run())


def test_backfilled_samples_keep_their_timestamps_and_fill_the_gap(prometheus: Prometheus) -> None:
    now_ms = (int(time.time() * 1000) // 1000) * 1000
    labels = series_labels(
        "lifeline_probe_rtt_seconds", {"agent": "pos-07", "site": "north", "target": "cad"}
    )
    # The agent's link failed 11 minutes ago and came back a minute ago: the live samples of the
    # last minute arrive first, the spooled ones (10 and 5 minutes old among them) after them.
    start = now_ms - 11 * 60_000
    timestamps = list(range(start, now_ms + 1, STEP_MS))
    value = {ts: round(0.020 + index / 1000, 3) for index, ts in enumerate(timestamps)}
    live = [(labels, value[ts], ts) for ts in timestamps if ts > now_ms - 60_000]
    backlog = [(labels, value[ts], ts) for ts in timestamps if ts <= now_ms - 60_000]
    assert any(ts == now_ms - 10 * 60_000 for _, _, ts in backlog)
    assert any(ts == now_ms - 5 * 60_000 for _, _, ts in backlog)

    first = _send(prometheus, live)
    second = _send(prometheus, backlog)
    assert (first.stats.sent, first.stats.failed) == (len(live), 0)
    assert (second.stats.sent, second.stats.failed, second.stats.retries) == (len(backlog), 0, 0)

    # Raw samples: every one stored, at its own millisecond timestamp.
    raw = prometheus.query(
        "/api/v1/query", query='lifeline_probe_rtt_seconds{agent="pos-07"}[15m]', time=now_ms / 1000 + 1
    )
    assert len(raw) == 1
    stored = {round(float(t) * 1000): float(v) for t, v in raw[0]["values"]}  # type: ignore[union-attr]
    assert stored == value

    # The graph Grafana draws: one point per step across the outage, each its own sample — no gap.
    graph = prometheus.query(
        "/api/v1/query_range",
        query='lifeline_probe_rtt_seconds{agent="pos-07"}',
        start=start / 1000,
        end=now_ms / 1000,
        step=STEP_MS / 1000,
    )
    points = {round(float(t) * 1000): float(v) for t, v in graph[0]["values"]}  # type: ignore[union-attr]
    assert points == value


def test_a_two_hour_old_sample_is_refused_not_retried_and_counted(prometheus: Prometheus) -> None:
    now_ms = int(time.time() * 1000)
    labels = series_labels("lifeline_agent_clock_offset_seconds", {"agent": "pos-09", "site": "north"})
    _send(prometheus, [(labels, 0.0, now_ms - 1000)])  # the head has recent data, as in service

    too_old = (labels, 9.0, now_ms - 2 * 3_600_000)
    fresh = [(labels, 0.001 * index, now_ms - 30_000 + index * 1000) for index in range(1, 6)]
    writer = _send(prometheus, [too_old, *fresh])  # one request holds both

    assert (writer.stats.sent, writer.stats.failed, writer.stats.retries) == (5, 1, 0)
    raw = prometheus.query(
        "/api/v1/query",
        query='lifeline_agent_clock_offset_seconds{agent="pos-09"}[3h]',
        time=now_ms / 1000 + 1,
    )
    stored = {round(float(t) * 1000) for t, _ in raw[0]["values"]}  # type: ignore[union-attr]
    assert {ts for _, _, ts in fresh} <= stored
    assert too_old[2] not in stored
