"""Read API (alerts, positions, OpenAPI, health) and ingest → alert → webhook, all in-process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from collector_kit import T0, Receiver, cad_round, envelope, make_config, serving
from starlette.routing import Route

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire import Batch, Envelope, Event, encode

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


async def test_position_history_by_query_from_since_on(tmp_path: Path, clock: ManualClock) -> None:
    """``?samples=`` and ``?events=`` read one position's stored history from ``?since=`` on;
    without them the document is unchanged; a bad parameter is a 400 that names it."""
    (tmp_path / "read.token").write_text("display-token-0123456789\n")
    config = make_config(
        tmp_path, auth={"read_access": "viewer", "viewer_token_file": str(tmp_path / "read.token")}
    )
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-12", site="north", position="12", now_ms=MS)
    reader = {"Authorization": "Bearer display-token-0123456789"}
    async with serving(app) as client:
        for seq in range(3):
            ts = MS + 1000 * (seq + 1)
            link = Event("link.changed", ts, {"interface": "eth0", "action": "down" if seq == 1 else "up"})
            batch = Batch("pos-12", "boot-1", seq, ts, cad_round(ts, seq != 1, int(seq == 1)), [link])
            body = encode(Envelope(version=1, batches=[batch], sent_ms=ts))
            answer = await client.post(
                "/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 200

        async def position(**params: str) -> dict[str, Any]:
            answer = await client.get("/positions/pos-12", params=params, headers=reader)
            assert answer.status_code == 200
            body: dict[str, Any] = answer.json()
            return body

        asked = await position(samples="lifeline_probe_success", since=str(MS + 2000))
        assert [(s["ts_ms"], s["value"]) for s in asked["samples"]] == [(MS + 2000, 0.0), (MS + 3000, 1.0)]
        assert asked["samples"][0]["labels"] == {"target": "cad-primary", "role": "cad", "kind": "tcp"}
        assert "events" not in asked
        assert len((await position(samples="lifeline_probe_success"))["samples"]) == 3
        events = (await position(events="link.changed", since=str(MS + 2000)))["events"]
        assert events == [
            {"ts_ms": MS + 2000, "attributes": {"interface": "eth0", "action": "down"}},
            {"ts_ms": MS + 3000, "attributes": {"interface": "eth0", "action": "up"}},
        ]
        assert (await position(events="route.misrouted"))["events"] == []
        plain = await position()
        assert "samples" not in plain
        assert "events" not in plain

        refused = await client.get("/positions/pos-12", params={"samples": "lifeline_probe_success"})
        assert refused.status_code == 401
        for params, named in (
            ({"since": "yesterday"}, "since"),
            ({"since": "-1"}, "since"),
            ({"since": "²"}, "since"),
            ({"samples": "not a metric"}, "samples"),
            ({"events": ""}, "events"),
        ):
            bad = await client.get("/positions/pos-12", params=params, headers=reader)
            assert bad.status_code == 400, params
            assert bad.json()["error"].startswith(f"{named}:"), params
