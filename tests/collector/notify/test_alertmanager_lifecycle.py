"""The collector's alert lifecycle through a real Alertmanager: fired, kept alive by resends, resolved."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from collector_kit import cad_round, make_config, serving

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire import Batch, Envelope

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
