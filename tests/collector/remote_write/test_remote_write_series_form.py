"""Durable remote-write over both blob forms: a version 1 batch and a series-form batch go out
sample by sample, each with its own timestamp, once and in number order; a cursor that stopped
inside the series-form batch resumes at its next sample after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lifeline_collector.remote_write import DurableRemoteWriter, RemoteWriteConfig
from lifeline_collector.store import CODEC_JSON_LZ4, CODEC_SERIES_LZ4, Store
from lifeline_wire import Batch, Sample, SeriesPoints

if TYPE_CHECKING:
    from conftest import Receiver

pytestmark = pytest.mark.system

T0 = 1_700_000_000_000
CAD = {"target": "cad", "role": "cad"}
ISP = {"target": "isp", "role": "internet"}


def _config(url: str, cursor: Path, per_send: int) -> RemoteWriteConfig:
    return RemoteWriteConfig(
        url=url,
        timeout=2.0,
        batch_wait=0.02,
        min_backoff=0.01,
        max_backoff=0.05,
        max_samples_per_send=per_send,
        cursor_file=str(cursor),
    )


async def _run_once(writer: DurableRemoteWriter) -> None:
    writer.start()
    await writer.drain(10.0)


def _sent(receiver: Receiver) -> list[list[tuple[str, float, int]]]:
    """Each request's samples (a request is ordered by time, as Prometheus wants), sorted."""
    return [
        sorted((dict(labels)["target"], value, ts) for labels, value, ts in r.samples)
        for r in receiver.requests
    ]


def _chunks(samples: list[tuple[str, float, int]], size: int) -> list[list[tuple[str, float, int]]]:
    return [sorted(samples[at : at + size]) for at in range(0, len(samples), size)]


def test_both_blob_forms_replay_every_sample_exactly(receiver: Receiver, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "collector.db"))
    cursor = tmp_path / "remote_write.cursor"
    try:
        store.add_agent("pos-1", site="north", now_ms=T0)
        v1 = Batch(
            "pos-1",
            "b1",
            0,
            T0,
            samples=[Sample("lifeline_probe_success", float(i % 2), T0 + 1000 * i, CAD) for i in range(3)],
        )
        # Series form: two series, points out of time order, two points sharing a timestamp.
        v2 = Batch(
            "pos-1",
            "b1",
            1,
            T0,
            series=[
                SeriesPoints(
                    "lifeline_probe_success", CAD, [(T0 + 5000, 1.0), (T0 + 3000, 0.0), (T0 + 4000, 1.0)]
                ),
                SeriesPoints("lifeline_probe_success", ISP, [(T0 + 3000, 1.0), (T0 + 3000, 0.0)]),
            ],
        )
        with store.writer() as writer:
            for batch in (v1, v2):
                assert writer.insert_batch("pos-1", batch, T0) is not None
                assert writer.insert_batch("pos-1", batch, T0) is None  # a retry adds nothing to send
        codecs = [row[0] for row in store._query("SELECT codec FROM batches ORDER BY id")]
        assert codecs == [CODEC_JSON_LZ4, CODEC_SERIES_LZ4]
        expected = [(s.labels["target"], s.number, s.ts_ms) for s in v1.every_sample() + v2.every_sample()]
        assert len(expected) == 8

        asyncio.run(_run_once(DurableRemoteWriter(_config(receiver.url, cursor, 3), store)))
        # Three per send, in sample-number order: every sample once, with its own timestamp.
        assert _sent(receiver) == _chunks(expected, 3)
        assert cursor.read_text().strip() == "8"

        # The cursor stopped inside the series-form batch: a restart sends the rest of it, then more.
        receiver.requests.clear()
        cursor.write_text("5\n")
        later = Batch(
            "pos-1", "b1", 2, T0, series=[SeriesPoints("lifeline_probe_success", CAD, [(T0 + 6000, 0.0)])]
        )
        with store.writer() as writer:
            writer.insert_batch("pos-1", later, T0)
        asyncio.run(_run_once(DurableRemoteWriter(_config(receiver.url, cursor, 100), store)))
        assert _sent(receiver) == _chunks([*expected[5:], ("cad", 0.0, T0 + 6000)], 100)
        assert cursor.read_text().strip() == "9"
    finally:
        store.close()
