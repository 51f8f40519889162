"""The series form (wire version 2) through the collector: the fast decode agrees with the strict
one, both blob forms read back as the same samples with exact numbers, catalog errors name the
series, the latest values survive a restart without a row per series, and the ingest route
served ahead of Starlette's routing still answers like one."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from collector_kit import T0, fast_agrees_with_strict, make_config, serving

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.fleet import Fleet
from lifeline_collector.ingest.fast import prepare_fast
from lifeline_collector.ingest.strict import prepare
from lifeline_collector.service import Collector
from lifeline_collector.store import (
    CODEC_JSON_LZ4,
    CODEC_SERIES_LZ4,
    AgentRow,
    BatchRow,
    Store,
    labels_key,
    unpack_samples,
)
from lifeline_wire import Batch, Envelope, Sample, SeriesPoints, decode_envelope, decode_response, encode

MS = int(T0 * 1000)
CAD = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}
ISP = {"target": "isp", "role": "internet", "path": "primary", "kind": "icmp"}
AGENT = AgentRow("pos-1", "", "", MS, None, None, None)


def body(*batches: Batch, version: int = 2) -> bytes:
    return encode(Envelope(version=version, batches=list(batches), sent_ms=MS, site="north", position="1"))


def series_batch(seq: int, base: int = MS, *, cad: tuple[float, ...] = (1.0, 0.0, 0.0)) -> Batch:
    """Rounds of a CAD probe (out of time order), an ISP probe, and a NaN risk, in the series form."""
    points = [(base + 1000 * i, value) for i, value in enumerate(cad)]
    return Batch(
        agent_id="pos-1",
        boot_id="b1",
        seq=seq,
        created_ms=base,
        series=[
            SeriesPoints("lifeline_probe_success", CAD, [points[-1], *points[:-1]]),
            SeriesPoints("lifeline_probe_success", ISP, [(base, 1.0), (base + 1000, 1.0)]),
            SeriesPoints("lifeline_cad_risk_ratio", {}, [(base, math.nan)]),
        ],
    )


def test_fast_and_strict_agree_on_the_series_form() -> None:
    fast = fast_agrees_with_strict(
        AGENT, body(series_batch(1, MS + 10_000), series_batch(0, cad=(0.0, 1.0, 0.0)))
    )
    cad = fast.candidates[("lifeline_probe_success", labels_key(CAD))]
    assert (cad.ts_ms, cad.value) == (MS + 12_000, 0.0)
    assert [ts for ts, _ in cad.points or []] == [
        MS,
        MS + 1000,
        MS + 2000,
        MS + 10_000,
        MS + 11_000,
        MS + 12_000,
    ]
    isp = fast.candidates[("lifeline_probe_success", labels_key(ISP))]
    assert (isp.ts_ms, isp.value, isp.points) == (MS + 11_000, 1.0, None)
    assert math.isnan(fast.candidates[("lifeline_cad_risk_ratio", "{}")].value)
    assert [row.codec for _, row in fast.batches] == [CODEC_SERIES_LZ4, CODEC_SERIES_LZ4]


def test_fast_and_strict_agree_when_both_forms_and_ties_mix() -> None:
    both = Batch(
        agent_id="pos-1",
        boot_id="b1",
        seq=0,
        created_ms=MS,
        samples=[Sample("lifeline_probe_success", 1.0, MS + 2000, CAD)],  # ties the series' newest
        series=[SeriesPoints("lifeline_probe_success", CAD, [(MS + 2000, 0.0), (MS, 0.0)])],
    )
    old = Batch(
        agent_id="pos-1",
        boot_id="b1",
        seq=1,
        created_ms=MS,
        samples=[Sample("lifeline_probe_success", 0.0, MS + 2000, CAD)],
    )
    fast = fast_agrees_with_strict(AGENT, body(both, old))
    cad = fast.candidates[("lifeline_probe_success", labels_key(CAD))]
    assert cad.value == 1.0  # the first sent among equal times: the sample, sent before the series
    assert [row.codec for _, row in fast.batches] == [CODEC_SERIES_LZ4, CODEC_JSON_LZ4]
    # One label set spelled in two orders is left to the strict path (as in the sample form).
    respelled = Batch(
        agent_id="pos-1",
        boot_id="b1",
        seq=2,
        created_ms=MS,
        series=[SeriesPoints("lifeline_probe_success", dict(reversed(CAD.items())), [(MS + 9000, 1.0)])],
    )
    assert prepare_fast(AGENT, body(both, respelled)) is None


def test_version_1_bodies_take_the_fast_path_unchanged() -> None:
    v1 = Batch(agent_id="pos-1", boot_id="b1", seq=0, created_ms=MS, samples=series_batch(0).every_sample())
    fast = fast_agrees_with_strict(AGENT, body(v1, version=1))
    ((_, row),) = fast.batches
    assert row.codec == CODEC_JSON_LZ4
    assert unpack_samples(row.codec, row.blob) == v1.samples


@pytest.mark.parametrize(
    "entry",
    [
        SeriesPoints("lifeline_made_up", {}, [(MS, 1.0)]),
        SeriesPoints("lifeline_probe_success", {"colour": "red"}, [(MS, 1.0)]),
        SeriesPoints("lifeline_agent_up", {}, [(MS, 1.0)]),
    ],
)
def test_catalog_trouble_in_a_series_goes_to_the_strict_path_which_names_it(entry: SeriesPoints) -> None:
    good = SeriesPoints("lifeline_probe_success", CAD, [(MS, 1.0)])
    sent = body(Batch(agent_id="pos-1", boot_id="b1", seq=0, created_ms=MS, series=[good, entry]))
    assert prepare_fast(AGENT, sent) is None
    strict = prepare(AGENT, decode_envelope(sent))
    reason = strict.results[0].reason if strict.results[0] is not None else ""
    assert reason.startswith("$.batches[0].series[1].")
    assert strict.batches == []


def test_too_many_points_go_to_the_strict_path() -> None:
    points = [(MS + i, 1.0) for i in range(10_001)]
    sent = body(
        Batch(
            agent_id="pos-1",
            boot_id="b1",
            seq=0,
            created_ms=MS,
            series=[SeriesPoints("lifeline_probe_success", CAD, points[:5000])],
        )
    ).replace(
        encode(SeriesPoints("lifeline_probe_success", CAD, points[:5000])),
        b",".join([encode(SeriesPoints("lifeline_probe_success", CAD, points))] * 2),
    )
    assert prepare_fast(AGENT, sent) is None
    with pytest.raises(ValueError, match="at most 20000 samples per batch"):
        decode_envelope(sent)


def stored(path: Path) -> Collector:
    collector = Collector(make_config(path))
    if not collector.store.agents():
        collector.store.add_agent("pos-1", site="north", now_ms=MS)
    collector.fleet.sync_agents(collector.store.agents())
    return collector


def test_the_store_reads_both_blob_forms_with_exact_sample_numbers(tmp_path: Path) -> None:
    collector = stored(tmp_path)
    agent = collector.store.agents()[0]
    v1 = Batch(agent_id="pos-1", boot_id="b1", seq=0, created_ms=MS, samples=series_batch(0).every_sample())
    v2 = series_batch(1, MS + 5000)
    for version, batch in ((1, v1), (2, v2)):
        pending = prepare_fast(agent, body(batch, version=version))
        assert pending is not None
        collector.ingestor.commit([pending])
    codecs = [row[0] for row in collector.store._query("SELECT codec FROM batches ORDER BY id")]
    assert codecs == [CODEC_JSON_LZ4, CODEC_SERIES_LZ4]
    expected = v1.every_sample() + v2.every_sample()  # the canonical order: samples, then series by series
    after = collector.store.samples_after(0, 1000)
    assert [number for number, *_ in after] == list(range(1, len(expected) + 1))
    assert [(dict(labels)["__name__"], ts) for _, labels, _, ts in after] == [
        (s.name, s.ts_ms) for s in expected
    ]
    assert [repr(value) for *_, value, _ in after] == [repr(s.number) for s in expected]
    # A cursor inside the series-form batch resumes at the next sample of it.
    inside = len(v1.every_sample()) + 2
    assert [number for number, *_ in collector.store.samples_after(inside, 1000)] == list(
        range(inside + 1, len(expected) + 1)
    )
    assert collector.store.count("samples") == len(expected)
    success = collector.store.samples_of("pos-1", "lifeline_probe_success")
    assert len(success) == 10
    assert success == sorted(success, key=lambda row: row[1])
    collector.store.close()


def test_latest_values_survive_a_restart_from_one_row_per_agent(tmp_path: Path) -> None:
    collector = stored(tmp_path)
    agent = collector.store.agents()[0]
    for seq, base, cad in ((0, MS, (1.0, 0.0, 0.0)), (1, MS + 3000, (0.0, 0.0, 0.0))):
        pending = prepare_fast(agent, body(series_batch(seq, base, cad=cad)))
        assert pending is not None
        collector.ingestor.commit([pending])
    before = {
        (name, key): (state.labels, repr(state.value), state.ts_ms, state.zero_streak)
        for name, series in collector.fleet.agents["pos-1"].series.items()
        for key, state in series.items()
    }
    assert before[("lifeline_probe_success", labels_key(CAD))][2:] == (MS + 5000, 5)
    assert collector.store.count("agent_latest") == 1
    collector.store.close()

    again = Store(str(tmp_path / "collector.db"))
    try:
        fleet = Fleet.load(again)
        after = {
            (name, key): (state.labels, repr(state.value), state.ts_ms, state.zero_streak)
            for name, series in fleet.agents["pos-1"].series.items()
            for key, state in series.items()
        }
        assert after == before
    finally:
        again.close()


def test_per_series_latest_rows_of_a_schema_3_store_become_one_row_per_agent(tmp_path: Path) -> None:
    path = str(tmp_path / "collector.db")
    store = Store(path)
    with store.writer() as writer:  # pos-2 already has a row of its own: newer than its old rows
        writer.set_agent_latest("pos-2", [("lifeline_probe_success", labels_key(ISP), 1.0, MS + 1, 0)])
    store.close()
    db = sqlite3.connect(path)  # the per-series tables of schema 3, as it wrote them
    db.executescript(
        """
        CREATE TABLE series (id INTEGER PRIMARY KEY, agent TEXT NOT NULL, name TEXT NOT NULL,
            labels TEXT NOT NULL, UNIQUE (agent, name, labels));
        CREATE TABLE latest (series INTEGER PRIMARY KEY, value REAL, ts_ms INTEGER NOT NULL,
            zero_streak INTEGER NOT NULL);
        PRAGMA user_version = 3;
        """
    )
    for number, agent in ((1, "pos-1"), (2, "pos-2")):
        db.execute(
            "INSERT INTO series VALUES (?, ?, 'lifeline_probe_success', ?)", (number, agent, labels_key(CAD))
        )
        db.execute("INSERT INTO latest VALUES (?, 0.0, ?, 3)", (number, MS))
    db.commit()
    db.close()
    store = Store(path)
    try:
        rows = sorted((r.agent, r.labels, r.value, r.ts_ms, r.zero_streak) for r in store.latest())
        assert rows == [
            ("pos-1", labels_key(CAD), 0.0, MS, 3),  # its per-series row, now in its agent row
            ("pos-2", labels_key(ISP), 1.0, MS + 1, 0),  # the agent's own row wins over its old ones
        ]
        assert store.count("agent_latest") == 2
        tables = {str(r[0]) for r in store._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not {"series", "latest"} & tables
    finally:
        store.close()


def test_a_batch_row_of_a_series_form_batch_round_trips() -> None:
    batch = series_batch(0)
    row = BatchRow.of(batch)
    assert (row.codec, row.sample_count, row.min_ts, row.max_ts) == (CODEC_SERIES_LZ4, 6, MS, MS + 2000)
    assert unpack_samples(row.codec, row.blob) == batch.every_sample()


@pytest.fixture
async def client_and_service(
    tmp_path: Path, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Collector, str]]:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", site="north", now_ms=MS)
    async with serving(app) as client:
        yield client, service, token


@pytest.mark.anyio
async def test_the_ingest_route_ahead_of_routing_answers_like_one(
    client_and_service: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = client_and_service
    auth = {"Authorization": f"Bearer {token}"}
    sent = await client.post("/api/v1/ingest", content=body(series_batch(0)), headers=auth)
    assert sent.status_code == 200
    assert [r.status for r in decode_response(sent.content).results] == ["accepted"]
    assert service.store.count("samples", "pos-1") == 6
    assert (await client.post("/api/v1/ingest", content=b"{", headers=auth)).status_code == 400
    assert (await client.post("/api/v1/ingest", content=body(series_batch(1)))).status_code == 401
    wrong_method = await client.get("/api/v1/ingest", headers=auth)
    assert wrong_method.status_code == 405  # other methods still go through Starlette's routing
    assert (await client.get("/healthz")).status_code == 200
    refused = await client.post(
        "/api/v1/ingest",
        content=json.dumps({"version": 3, "batches": [], "sent_ms": MS}).encode(),
        headers=auth,
    )
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "unsupported schema version 3 (this end speaks 1 and 2)",
        "field": "$.version",
    }
