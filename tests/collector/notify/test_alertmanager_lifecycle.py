"""The collector's alert lifecycle through a real Alertmanager: fired, kept alive by resends, resolved."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from collector_kit import cad_round, make_config, serving

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire import Batch, Envelope, Sample
from lifeline_wire.catalog.health import STATES
from lifeline_wire.heartbeat import BeatDigest
from lifeline_wire.layers import LAYERS

pytestmark = [pytest.mark.anyio, pytest.mark.system]


def am_alerts(url: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{url}/api/v2/alerts", params={"filter": 'agent="pos-12"'}, timeout=5)
    answer.raise_for_status()
    alerts: list[dict[str, object]] = answer.json()
    return alerts


async def test_firing_is_resent_while_firing_and_resolved_is_sent(tmp_path: Path, alertmanager: str) -> None:
    # Alertmanager judges endsAt against its own (real) clock: the manual one stays behind it.
    clock = ManualClock(time.time() - 40)
    config = make_config(
        tmp_path,
        alerting={"cad_failures": 2, "resend_interval": "30s", "silent_after": "10m"},
        exposition={"stale_after": "10m"},
        notifiers=[{"kind": "alertmanager", "name": "am", "url": alertmanager}],
    )
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    service.store.add_agent("pos-12", site="north", position="12", now_ms=int(clock.now() * 1000))
    row = service.store.agent("pos-12")
    assert row is not None

    def report(seq: int, ok: bool, failures: int) -> None:
        ms = int(clock.now() * 1000)
        batch = Batch(
            agent_id="pos-12", boot_id="b", seq=seq, created_ms=ms, samples=cad_round(ms, ok, failures)
        )
        service.ingest(row, Envelope(version=1, batches=[batch], sent_ms=ms))

    async with serving(app):
        report(0, False, 1)
        clock.advance(1)
        report(1, False, 2)  # fires
        assert await service.dispatcher.drain(10)
        (first,) = am_alerts(alertmanager)
        assert first["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
        clock.advance(30)
        report(2, False, 3)
        service.tick()  # resend_interval passed: re-sent with a later endsAt
        assert await service.dispatcher.drain(10)
        (second,) = am_alerts(alertmanager)
        assert str(second["endsAt"]) > str(first["endsAt"])
        assert service.stats.notifications[("am", "ok")] == 2
        clock.advance(1)
        report(3, True, 0)  # resolved: sent with its real end, Alertmanager drops it
        assert await service.dispatcher.drain(10)
        assert am_alerts(alertmanager) == []
        assert service.stats.notifications[("am", "ok")] == 3


def _judged(ms: int, *, failed: tuple[str, ...] = (), cad_ok: bool = True) -> list[Sample]:
    """The agent's judgement (every layer, verdict, backup not ready) and one round of both CAD probes."""
    states = {layer: ("failed" if layer in failed else "ok") for layer in LAYERS}
    verdict = ("internet", "home internet (ISP) down, router fine") if failed else ("none", "healthy")
    out = [
        Sample("lifeline_layer_state", float(STATES[s]), ms, {"layer": layer}) for layer, s in states.items()
    ]
    out.append(Sample("lifeline_verdict_info", 1.0, ms, {"layer": verdict[0], "verdict": verdict[1]}))
    out.append(Sample("lifeline_failover_ready", 0.0, ms))
    for target in ("cad-tcp", "cad-icmp"):
        labels = {"target": target, "role": "cad", "path": "tunnel", "kind": "tcp"}
        out.append(Sample("lifeline_probe_success", 1.0 if cad_ok else 0.0, ms, labels))
    return out


async def test_one_outage_reaches_alertmanager_as_one_alert_kept_current(
    tmp_path: Path, alertmanager: str
) -> None:
    """A total cut, the backlog after it (a failed layer, two failed CAD targets) and the return:
    Alertmanager holds one alert throughout — the silence, its story added — and then none."""
    clock = ManualClock(time.time() - 120)
    config = make_config(
        tmp_path,
        alerting={"cad_failures": 2, "resolve_hold": "5s"},
        notifiers=[{"kind": "alertmanager", "name": "am", "url": alertmanager}],
    )
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    service.store.add_agent("pos-12", site="north", position="12", now_ms=int(clock.now() * 1000))
    row = service.store.agent("pos-12")
    assert row is not None
    seq = 0

    def report(samples: list[Sample]) -> None:
        nonlocal seq
        ms = int(clock.now() * 1000)
        batch = Batch(agent_id="pos-12", boot_id="b", seq=seq, created_ms=ms, samples=samples)
        service.ingest(row, Envelope(version=1, batches=[batch], sent_ms=ms))
        seq += 1

    async def beat() -> None:
        view = service.fleet.agents["pos-12"]
        before, view.last_beat = view.last_beat, clock.now()
        view.beat = BeatDigest("none", "ok", 0.0, None, False, False)
        view.beat_paths = {"tunnel": clock.now(), "backup": clock.now()}
        if before is None or clock.now() - before > 1.0:
            service.heard("pos-12")
            await asyncio.sleep(0.05)  # the receiver hands it to the event loop

    async with serving(app):
        report(_judged(int(clock.now() * 1000)))
        for _ in range(8):
            clock.advance(0.25)
            await beat()
        cut = clock.now()
        for _ in range(15):  # no path out of the house
            clock.advance(0.2)
            service.check_silence()
        assert await service.dispatcher.drain(10)
        (silent,) = am_alerts(alertmanager)
        assert silent["labels"]["alertname"] == "PositionSilent"
        clock.advance(30)
        await beat()  # back; then the spool drains: the outage's story
        report(_judged(int((cut + 0.5) * 1000), failed=("internet",), cad_ok=False))
        report(
            _judged(int((cut + 4.0) * 1000), failed=("internet", "vpn", "agency", "dns", "cad"), cad_ok=False)
        )
        assert await service.dispatcher.drain(10)
        (same,) = am_alerts(alertmanager)  # no PositionLayerFailed, no CadTargetUnreachable
        assert same["fingerprint"] == silent["fingerprint"]
        assert same["startsAt"] == silent["startsAt"]
        assert same["annotations"]["story"].startswith("cut off 33 s: home internet (ISP) down from ")
        clock.advance(1)
        report(_judged(int(clock.now() * 1000)))  # the present: healthy
        for _ in range(6):
            clock.advance(1)
            await beat()
            service.tick()
        assert await service.dispatcher.drain(10)
        assert am_alerts(alertmanager) == []
