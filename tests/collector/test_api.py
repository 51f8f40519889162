"""Read API (alerts, positions, OpenAPI, health) and ingest → alert → webhook, all in-process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from collector_kit import T0, Receiver, cad_round, envelope, make_config, serving
from starlette.routing import Route

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector

pytestmark = pytest.mark.anyio

MS = int(T0 * 1000)


async def test_ingest_fires_alert_to_webhook_and_api_then_resolves(
    tmp_path: Path, clock: ManualClock, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config(
        tmp_path,
        alerting={"cad_failures": 3},
        server={"public_url": "https://lifeline.example/"},
        notifiers=[{"kind": "webhook", "name": "pager", "url": receiver.url}],
    )
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-12", site="north", position="12", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}
    async with serving(app) as client:
        for seq in range(3):
            clock.advance(1)
            ts = int(clock.now() * 1000)
            body = envelope("pos-12", (seq, cad_round(ts, False, seq + 1)), site="north", position="12")
            assert (await client.post("/api/v1/ingest", content=body, headers=auth)).status_code == 200
        assert await service.dispatcher.drain(10)
        (page,) = receiver.bodies()
        assert page["status"] == "firing"
        assert page["alerts"][0]["annotations"]["summary"] == (
            "Position 12 (north): CAD server cad-primary unreachable for 3 rounds"
        )
        assert page["alerts"][0]["generatorURL"] == "https://lifeline.example/positions/pos-12"

        (active,) = (await client.get("/api/v1/alerts")).json()
        assert active["state"] == "firing"
        assert active["labels"]["alertname"] == "CadTargetUnreachable"
        assert active["fingerprint"] == page["alerts"][0]["fingerprint"]
        assert active["startsAt"] == "2023-11-14T22:13:21.000Z"

        detail = (await client.get("/positions/pos-12")).json()
        assert detail["name"] == "Position 12 (north)"
        assert (detail["site"], detail["position"], detail["up"]) == ("north", "12", True)
        assert detail["last_seen"] == "2023-11-14T22:13:23.000Z"
        assert [a["fingerprint"] for a in detail["alerts"]] == [active["fingerprint"]]
        assert {(s["name"], s["value"]) for s in detail["series"]} == {
            ("lifeline_probe_success", 0.0),
            ("lifeline_probe_consecutive_failures", 3.0),
        }
        assert [h["state"] for h in detail["history"]] == ["firing", "pending"]

        clock.advance(1)
        body = envelope("pos-12", (3, cad_round(int(clock.now() * 1000), True, 0)))
        await client.post("/api/v1/ingest", content=body, headers=auth)
        assert await service.dispatcher.drain(10)
        assert [b["status"] for b in receiver.bodies()] == ["firing", "resolved"]
        assert (await client.get("/api/v1/alerts")).json() == []
        assert (await client.get("/positions/nobody")).status_code == 404
    assert token not in caplog.text


async def test_notifications_do_not_hold_up_ingest(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    """A receiver that never answers in time does not delay the ingest answer."""
    config = make_config(
        tmp_path, notifiers=[{"kind": "webhook", "name": "slow", "url": receiver.url, "max_attempts": 1}]
    )
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-12", now_ms=MS)
    started = asyncio.Event()
    release = asyncio.Event()
    notifier = service.dispatcher.notifiers[0]
    original = notifier.send

    async def blocked(group: object) -> None:
        started.set()
        await release.wait()
        await original(group)  # type: ignore[arg-type]

    notifier.send = blocked  # type: ignore[method-assign]
    async with serving(app) as client:
        for seq in range(4):
            body = envelope("pos-12", (seq, cad_round(MS + seq * 1000, False, seq + 1)))
            response = await client.post(
                "/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200
        await asyncio.wait_for(started.wait(), 5)  # the page is being sent ...
        assert receiver.requests == []  # ... and still blocked, yet every ingest was answered
        release.set()
        assert await service.dispatcher.drain(10)
        assert len(receiver.requests) == 1


async def test_openapi_and_healthz(tmp_path: Path, clock: ManualClock) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    async with serving(app) as client:
        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        doc = (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    # Every route the app serves, with every method, is documented (and nothing else is).
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route) and route.path != "/api/v1/openapi.json"
        for method in (route.methods or ()) - {"HEAD"}
    }
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert documented == served
    silences = doc["paths"]["/api/v1/silences"]
    assert silences["post"]["security"] == [{"adminToken": []}]
    assert "get" in silences
    ingest = doc["paths"]["/api/v1/ingest"]["post"]
    assert set(ingest["responses"]) == {"200", "400", "401", "403", "413", "422", "503"}
    schemas = doc["components"]["schemas"]
    assert {"Envelope", "Batch", "Sample", "IngestResponse", "ItemResult", "Error"} <= set(schemas)
    assert set(schemas["Batch"]["required"]) >= {"agent_id", "boot_id", "seq", "created_ms"}
