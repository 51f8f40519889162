"""Durable remote-write over the real store: batches stored as blobs — of both forms, a version 1
batch and a series-form one — go out sample by sample, each with its own timestamp, once and in
number order; a cursor that stopped inside a batch resumes there after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from collector_kit import durable_config, replay

from lifeline_collector.remote_write.durable import DurableRemoteWriter
from lifeline_collector.store import CODEC_JSON_LZ4, CODEC_SERIES_LZ4, Store
from lifeline_wire import Batch, Sample, SeriesPoints

if TYPE_CHECKING:
    from conftest import Receiver

pytestmark = pytest.mark.system

T0 = 1_700_000_000_000
CAD = {"target": "cad", "role": "cad"}
ISP = {"target": "isp", "role": "internet"}


def _store_batch(store: Store, seq: int, start: int, rounds: int) -> list[tuple[float, int]]:
    samples = [Sample("lifeline_probe_success", float(i % 2), start + 1000 * i, CAD) for i in range(rounds)]
    with store.writer() as writer:
        batch = Batch(agent_id="pos-1", boot_id="b1", seq=seq, created_ms=start, samples=samples)
        assert writer.insert_batch("pos-1", batch, start) is not None
        assert writer.insert_batch("pos-1", batch, start) is None  # a retry adds nothing to send
    return [(s.number, s.ts_ms) for s in samples]


def test_blobs_go_out_sample_by_sample_and_resume_inside_a_batch(receiver: Receiver, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "collector.db"))
    cursor = tmp_path / "remote_write.cursor"
    try:
        store.add_agent("pos-1", site="north", now_ms=T0)
        first = _store_batch(store, 0, T0, 5) + _store_batch(store, 1, T0 + 5000, 5)
        writer = DurableRemoteWriter(durable_config(receiver.url, cursor, 3), store)
        replay(writer)
        sent = [s for r in receiver.requests for s in r.samples]
        assert [(value, ts) for _, value, ts in sent] == first
        assert {labels for labels, _, _ in sent} == {
            (
                ("__name__", "lifeline_probe_success"),
                ("agent", "pos-1"),
                ("role", "cad"),
                ("site", "north"),
                ("target", "cad"),
            )
        }
        assert cursor.read_text().strip() == "10"

        # A restart whose cursor stopped inside the second batch sends the rest of it, then the new one.
        receiver.requests.clear()
        cursor.write_text("7\n")
        later = _store_batch(store, 2, T0 + 10_000, 2)
        restarted = DurableRemoteWriter(durable_config(receiver.url, cursor, 100), store)
        replay(restarted)
        assert [(value, ts) for r in receiver.requests for _, value, ts in r.samples] == first[7:] + later
        assert cursor.read_text().strip() == "12"
    finally:
        store.close()


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

        replay(DurableRemoteWriter(durable_config(receiver.url, cursor, 3), store))
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
        replay(DurableRemoteWriter(durable_config(receiver.url, cursor, 100), store))
        assert _sent(receiver) == _chunks([*expected[5:], ("cad", 0.0, T0 + 6000)], 100)
        assert cursor.read_text().strip() == "9"
    finally:
        store.close()
