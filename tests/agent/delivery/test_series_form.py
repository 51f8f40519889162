"""The agent cuts its batches in the wire's series form, loses no sample doing it, and still ships
the version 1 batches an older agent left in its spool, unchanged."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from shipping import drain, make_shipper

from lifeline_agent.delivery.batcher import Batcher, group_by_series
from lifeline_agent.delivery.spool import MemorySpool, SqliteSpool
from lifeline_agent.recorder import Recorder
from lifeline_wire import Batch, Sample, SeriesPoints

TS = 1_800_000_000_000
CAD = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}
ISP = {"target": "isp", "role": "internet", "path": "primary", "kind": "icmp"}
FakeCollector = Any  # conftest.py


def record_rounds(recorder: Recorder) -> list[Sample]:
    """Three probe rounds of two series, interleaved as a runner records them (one out of order)."""
    for ts, cad, isp in ((TS, 1, 1), (TS + 1000, 0, 1), (TS + 2000, 0, 0)):
        recorder.sample("lifeline_probe_success", cad, CAD, ts_ms=ts)
        recorder.sample("lifeline_probe_success", isp, ISP, ts_ms=ts)
    recorder.sample("lifeline_probe_success", 1, CAD, ts_ms=TS + 500)  # late: recorded after newer ones
    recorder.sample("lifeline_cad_risk_ratio", float("nan"), {}, ts_ms=TS + 2000)
    samples, events = recorder.drain()
    for sample in samples:  # drain() emptied it: put everything back for the batcher
        recorder.sample(sample.name, sample.number, sample.labels, ts_ms=sample.ts_ms)
    assert not events
    return samples


def test_the_batcher_cuts_series_form_batches_keeping_every_sample() -> None:
    recorder = Recorder()
    recorded = record_rounds(recorder)
    (batch,) = Batcher("ws-1", "boot1", recorder, MemorySpool()).cut()
    assert batch.samples == []
    assert [(entry.name, entry.labels) for entry in batch.series] == [
        ("lifeline_probe_success", CAD),  # series in the order first recorded
        ("lifeline_probe_success", ISP),
        ("lifeline_cad_risk_ratio", {}),
    ]
    assert batch.series[0].points == [(TS, 1.0), (TS + 1000, 0.0), (TS + 2000, 0.0), (TS + 500, 1.0)]
    assert batch.series[2].points == [(TS + 2000, "NaN")]

    # Nothing measured is lost or merged: the same samples, each with its own time and value.
    def seen(samples: list[Sample]) -> list[tuple[str, str, int, str]]:
        return sorted((s.name, json.dumps(s.labels, sort_keys=True), s.ts_ms, repr(s.value)) for s in samples)

    assert seen(batch.every_sample()) == seen(recorded)
    assert batch.sample_count() == len(recorded) == 8


def test_series_form_off_cuts_version_1_batches_as_recorded() -> None:
    recorder = Recorder()
    recorded = record_rounds(recorder)
    (batch,) = Batcher("ws-1", "boot1", recorder, MemorySpool(), series_form=False).cut()
    assert batch.series == []
    assert batch.samples == recorded


def test_grouping_keys_on_label_values_not_their_order() -> None:
    reordered = dict(reversed(CAD.items()))
    grouped = group_by_series(
        [
            Sample("lifeline_probe_success", 1.0, TS, CAD),
            Sample("lifeline_probe_success", 0.0, TS + 1, reordered),
        ]
    )
    assert grouped == [SeriesPoints("lifeline_probe_success", CAD, [(TS, 1.0), (TS + 1, 0.0)])]
    assert group_by_series([]) == []


def test_version_1_batches_left_in_the_spool_still_ship_unchanged(
    fake_collector: FakeCollector, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    spool = SqliteSpool(str(path))
    try:
        # What an older agent wrote: the version 1 encoding, without ``series``.
        old = {
            "agent_id": "ws-1",
            "boot_id": "old",
            "seq": 0,
            "created_ms": TS,
            "samples": [
                {"name": "lifeline_probe_success", "value": 1.0, "ts_ms": TS, "labels": CAD},
                {"name": "lifeline_probe_success", "value": 0.0, "ts_ms": TS + 1000, "labels": CAD},
            ],
            "events": [],
            "priority": False,
        }
        body = json.dumps(old).encode()
        with sqlite3.connect(path) as db:
            db.execute(
                "INSERT INTO batches (boot_id, seq, priority, created_ms, size, body) VALUES (?, ?, ?, ?, ?, ?)",
                ("old", 0, 0, TS, len(body), body),
            )
        db.close()
        spool.close()
        spool = SqliteSpool(str(path))  # reopened: it counts what is already there
        recorder = Recorder()
        record_rounds(recorder)
        asyncio.run(Batcher("ws-1", "new", recorder, spool).flush())
        assert spool.depth() == 2
        drain(make_shipper(fake_collector.url, spool), spool)
        assert spool.depth() == 0
        arrived = {batch.boot_id: batch for batch in fake_collector.batches}
        assert set(arrived) == {"old", "new"}
        assert arrived["old"] == Batch(
            "ws-1",
            "old",
            0,
            TS,
            samples=[Sample(**sample) for sample in old["samples"]],  # type: ignore[arg-type]
        )
        assert arrived["new"].series
        assert not arrived["new"].samples
    finally:
        spool.close()
