"""Ingest API: auth, limits, strict decoding, per-batch results and idempotency (ASGI app in-process)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from collector_kit import T0, cad_round, envelope, make_config, serving

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.errors import StoreError
from lifeline_collector.service import Collector
from lifeline_collector.store import Store
from lifeline_wire import IngestResponse, Sample, decode_response

MS = int(T0 * 1000)


pytestmark = pytest.mark.anyio


async def ingest(client: httpx.AsyncClient, token: str, body: bytes) -> IngestResponse:
    response = await client.post("/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return decode_response(response.content)


@pytest.fixture
async def app_client(
    tmp_path: Path, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Collector, str]]:
    app = create_app(make_config(tmp_path, server={"max_body_bytes": "64KiB"}), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-12", site="north", position="12", now_ms=MS)
    service.store.add_agent("pos-13", now_ms=MS)
    async with serving(app) as client:
        yield client, service, token


async def test_accepts_a_batch_and_stores_its_samples(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    response = await client.post(
        "/api/v1/ingest",
        content=envelope("pos-12", (0, cad_round(MS, True, 0)), site="north", position="12"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    answer = decode_response(response.content)
    assert [(r.boot_id, r.seq, r.status) for r in answer.results] == [("boot-1", 0, "accepted")]
    assert answer.server_ms == MS
    assert service.store.count("samples", "pos-12") == 2
    assert service.store.count("batches", "pos-12") == 1


async def test_replayed_batch_is_duplicate_and_stored_once(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    body = envelope("pos-12", (0, cad_round(MS, True, 0)), (1, cad_round(MS + 1000, True, 0)))
    first = await ingest(client, token, body)
    again = await ingest(client, token, body)
    assert [r.status for r in first.results] == ["accepted", "accepted"]
    assert [r.status for r in again.results] == ["duplicate", "duplicate"]
    assert service.store.count("batches", "pos-12") == 2
    assert service.store.count("samples", "pos-12") == 4
    # The same batch twice inside one request is stored once too.
    twice = envelope("pos-12", (5, cad_round(MS + 5000, True, 0)), (5, cad_round(MS + 5000, True, 0)))
    answer = await ingest(client, token, twice)
    assert [r.status for r in answer.results] == ["accepted", "duplicate"]
    assert service.store.count("samples", "pos-12") == 6


async def test_missing_and_wrong_token_get_identical_401(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    body = envelope("pos-12", (0, cad_round(MS, True, 0)))
    missing = await client.post("/api/v1/ingest", content=body)
    wrong = await client.post(
        "/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token[:-2]}xx"}
    )
    basic = await client.post("/api/v1/ingest", content=body, headers={"Authorization": f"Basic {token}"})
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.content == missing.content
    assert json.loads(missing.content) == {"error": "invalid or missing token"}
    assert service.store.count("batches") == 0


async def test_revoked_token_is_refused(app_client: tuple[httpx.AsyncClient, Collector, str]) -> None:
    client, service, token = app_client
    await ingest(client, token, envelope("pos-12", (0, [])))  # the token is known (and kept) now
    service.store.revoke_agent("pos-12", now_ms=MS)
    response = await client.post(
        "/api/v1/ingest", content=envelope("pos-12", (0, [])), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


async def test_a_token_revoked_by_another_process_is_refused_from_the_next_tick(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    await ingest(client, token, envelope("pos-12", (0, [])))
    other = Store(service.store.path)  # `lifeline-collector agents revoke`: another connection
    try:
        other.revoke_agent("pos-12", now_ms=MS)
    finally:
        other.close()
    service.tick()  # notices that the registry changed
    response = await client.post(
        "/api/v1/ingest", content=envelope("pos-12", (1, [])), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


async def test_a_token_lookup_that_fails_answers_503_so_the_agent_keeps_its_batch(
    app_client: tuple[httpx.AsyncClient, Collector, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service, token = app_client

    def unreachable(_token: str) -> None:
        raise StoreError("query failed: couldn't get a connection after 0.25 sec")

    monkeypatch.setattr(service.store, "agent_for_token", unreachable)
    response = await client.post(
        "/api/v1/ingest", content=envelope("pos-12", (0, [])), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert service.store.count("batches") == 0


async def test_batch_of_another_agent_is_403(app_client: tuple[httpx.AsyncClient, Collector, str]) -> None:
    client, service, token = app_client
    response = await client.post(
        "/api/v1/ingest",
        content=envelope("pos-13", (0, cad_round(MS, True, 0))),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.json()["field"] == "$.batches[0].agent_id"
    assert service.store.count("batches") == 0


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        (b'{"version": 1, "batches": [', 400, "$", "truncated"),
        (b"", 400, "$", "truncated"),
        (b"{not json}", 400, "$", "malformed"),
        (
            b'{"version": 3, "batches": [], "sent_ms": 1700000000000}',
            422,
            "$.version",
            "unsupported schema version 3",
        ),
        (
            b'{"version": 1, "sent_ms": 1700000000000, "batches": [{"agent_id": "pos-12", "boot_id": "b",'
            b' "seq": "seven", "created_ms": 1700000000000}]}',
            422,
            "$.batches[0].seq",
            "Expected `int`",
        ),
        (
            b'{"version": 1, "sent_ms": 1700000000, "batches": [{"agent_id": "pos-12", "boot_id": "b",'
            b' "seq": 1, "created_ms": 1700000000000}]}',
            422,
            "$.sent_ms",
            ">= 1000000000000",
        ),
        (
            b'{"version": 1, "sent_ms": 1700000000000, "batches": [{"agent_id": "pos-12", "boot_id": "b",'
            b' "seq": 1, "created_ms": 1700000000000, "extra": 1}]}',
            422,
            "$.batches[0]",
            "unknown field `extra`",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "malformed",
        "unknown-version",
        "wrong-type",
        "seconds-not-ms",
        "unknown-field",
    ],
)
async def test_bad_bodies_name_the_field(
    app_client: tuple[httpx.AsyncClient, Collector, str], body: bytes, status: int, field: str, words: str
) -> None:
    client, service, token = app_client
    response = await client.post("/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status
    answer = response.json()
    assert answer["field"] == field
    assert words in answer["error"]
    assert service.store.count("batches") == 0


async def test_oversized_body_is_413_declared_or_streamed(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    big = [Sample("lifeline_probe_success", 1.0, MS + i, {"target": f"t{i}"}) for i in range(2000)]
    body = envelope("pos-12", (0, big))
    assert len(body) > 64 * 1024
    declared = await client.post("/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"})
    assert declared.status_code == 413
    assert "split" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is counted while streaming
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = await client.post(
        "/api/v1/ingest", content=chunks(), headers={"Authorization": f"Bearer {token}"}
    )
    assert streamed.status_code == 413
    assert service.store.count("batches") == 0


async def test_unknown_metric_rejects_only_its_batch(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    bad = [Sample("lifeline_probe_success", 1.0, MS, {}), Sample("lifeline_made_up", 1.0, MS, {})]
    body = envelope("pos-12", (0, cad_round(MS, True, 0)), (1, bad), (2, cad_round(MS + 1000, True, 0)))
    answer = await ingest(client, token, body)
    assert [r.status for r in answer.results] == ["accepted", "rejected", "accepted"]
    assert (
        answer.results[1].reason
        == "$.batches[1].samples[1].name: unknown metric 'lifeline_made_up' (not in the catalog)"
    )
    assert service.store.count("batches") == 2
    assert service.store.count("samples") == 4


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (
            Sample("lifeline_probe_success", 1.0, MS, {"target": "cad", "colour": "red"}),
            "$.batches[0].samples[0].labels.colour: not a label of lifeline_probe_success"
            " (allowed: target, role, path, kind)",
        ),
        (
            Sample("lifeline_probe_success", 1.0, MS, {"agent": "someone-else"}),
            "$.batches[0].samples[0].labels.agent: not a label of lifeline_probe_success",
        ),
        (
            Sample("lifeline_agent_up", 1.0, MS, {}),
            "$.batches[0].samples[0].name: lifeline_agent_up is exposed by the collector itself",
        ),
    ],
    ids=["undeclared-label", "reserved-label", "collector-metric"],
)
async def test_wrong_labels_and_collector_metrics_are_rejected(
    app_client: tuple[httpx.AsyncClient, Collector, str], sample: Sample, reason: str
) -> None:
    client, service, token = app_client
    answer = await ingest(client, token, envelope("pos-12", (0, [sample])))
    assert answer.results[0].status == "rejected"
    assert answer.results[0].reason.startswith(reason)
    assert service.store.count("samples") == 0


async def test_site_position_clock_offset_and_sequence_gaps(
    app_client: tuple[httpx.AsyncClient, Collector, str], clock: ManualClock
) -> None:
    client, service, token = app_client
    auth = {"Authorization": f"Bearer {token}"}
    # The agent's clock runs 2.5 s ahead; seq 1 and 2 are missing.
    body = envelope("pos-12", (0, []), (3, []), sent_ms=MS + 2500, site="south", position="12B")
    assert (await client.post("/api/v1/ingest", content=body, headers=auth)).status_code == 200
    view = service.fleet.agents["pos-12"]
    # What ``agents add`` registered wins over what the agent says (it cannot move itself).
    assert (view.site, view.position) == ("north", "12")
    assert view.clock_offset == pytest.approx(2.5)
    assert (view.seq.jumps, view.seq.missing) == (2, 2)
    row = service.store.agent("pos-12")
    assert row is not None
    assert (row.site, row.position, row.clock_offset_ms) == ("north", "12", 2500)
    # A late batch fills part of the gap: still missing one, the jump count stays.
    await client.post("/api/v1/ingest", content=envelope("pos-12", (1, [])), headers=auth)
    assert (view.seq.jumps, view.seq.missing) == (2, 1)
    # A new boot starts its own sequence.
    await client.post("/api/v1/ingest", content=envelope("pos-12", (0, []), boot="boot-2"), headers=auth)
    assert (view.seq.jumps, view.seq.missing) == (2, 1)
    # Empty site/position in the envelope keeps what is known.
    await client.post("/api/v1/ingest", content=envelope("pos-12", (4, [])), headers=auth)
    assert (view.site, view.position) == ("north", "12")


async def test_backfill_is_stored_but_does_not_move_latest(
    app_client: tuple[httpx.AsyncClient, Collector, str],
) -> None:
    client, service, token = app_client
    auth = {"Authorization": f"Bearer {token}"}
    await client.post(
        "/api/v1/ingest", content=envelope("pos-12", (5, cad_round(MS + 5000, True, 0))), headers=auth
    )
    await client.post(
        "/api/v1/ingest", content=envelope("pos-12", (1, cad_round(MS + 1000, False, 1))), headers=auth
    )
    latest = next(service.fleet.agents["pos-12"].named("lifeline_probe_success"))
    assert (latest.value, latest.ts_ms) == (1.0, MS + 5000)
    stored = service.store.samples_of("pos-12", "lifeline_probe_success")
    assert [(ts, value) for _labels, ts, value in stored] == [(MS + 1000, 0.0), (MS + 5000, 1.0)]


async def test_non_finite_values_round_trip(app_client: tuple[httpx.AsyncClient, Collector, str]) -> None:
    client, service, token = app_client
    samples = [
        Sample("lifeline_cad_time_to_loss_seconds", float("inf"), MS),
        Sample("lifeline_cad_risk_ratio", float("nan"), MS),
    ]
    answer = await ingest(client, token, envelope("pos-12", (0, samples)))
    assert answer.results[0].status == "accepted"
    stored = service.store.samples_of("pos-12", "lifeline_cad_time_to_loss_seconds")
    assert stored[0][2] == float("inf")
    nan = service.store.samples_of("pos-12", "lifeline_cad_risk_ratio")[0][2]
    assert nan != nan
