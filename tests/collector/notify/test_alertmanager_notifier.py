"""Alertmanager notifier against a real Alertmanager (Debian package) started on loopback."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from notify_kit import ALERTMANAGER

from lifeline_collector.alerting.alert import Alert, AlertState, fingerprint, group_of
from lifeline_collector.clock import SystemClock
from lifeline_collector.config import parse
from lifeline_collector.notify import REGISTRY, NotifyContext
from lifeline_collector.notify.dispatch import Dispatcher
from lifeline_collector.self_metrics import Stats

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.system,
    pytest.mark.skipif(shutil.which(ALERTMANAGER) is None, reason="prometheus-alertmanager is not installed"),
]


def current(url: str, agent: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'agent="{agent}"'}, timeout=5)
    answer.raise_for_status()
    alerts: list[dict[str, object]] = answer.json()
    return alerts


async def test_firing_then_resolved_in_a_real_alertmanager(alertmanager: str) -> None:
    config = parse({"notifiers": [{"kind": "alertmanager", "name": "am", "url": alertmanager}]})
    clock = SystemClock()
    context = NotifyContext("http://collector.example", clock, 60.0)
    stats = Stats()
    dispatcher = Dispatcher([REGISTRY["alertmanager"].build(config.notifiers[0], context)], stats)
    dispatcher.start()
    labels = {
        "alertname": "CadTargetUnreachable",
        "agent": "pos-12",
        "site": "north",
        "target": "cad-primary",
    }
    started = clock.now() - 3
    alert = Alert(
        labels=labels,
        annotations={
            "summary": "Position 12 (north): CAD server cad-primary unreachable for 3 rounds",
            "link": "http://collector.example/positions/pos-12",
        },
        state=AlertState.FIRING,
        starts_at=started,
        fingerprint=fingerprint(labels),
        scope="pos-12",
    )
    try:
        dispatcher.submit(group_of(alert))
        assert await dispatcher.drain(10)
        assert stats.notifications[("am", "ok")] == 1
        (seen,) = current(alertmanager, "pos-12")
        assert seen["labels"] == labels
        assert seen["annotations"] == alert.annotations
        assert seen["generatorURL"] == "http://collector.example/positions/pos-12"
        assert seen["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
        assert str(seen["startsAt"]).startswith(time.strftime("%Y-%m-%dT", time.gmtime(started)))
        # A resend while firing keeps it; the resolved alert carries its end and leaves the active list.
        dispatcher.submit(group_of(alert, resend=True))
        assert await dispatcher.drain(10)
        assert len(current(alertmanager, "pos-12")) == 1
        resolved = Alert(
            **{
                **{n: getattr(alert, n) for n in Alert.__slots__},
                "state": AlertState.RESOLVED,  # type: ignore[attr-defined]
                "ends_at": clock.now() - 0.5,
            }
        )
        dispatcher.submit(group_of(resolved))
        assert await dispatcher.drain(10)
        assert current(alertmanager, "pos-12") == []
        assert stats.notifications[("am", "ok")] == 3
    finally:
        await dispatcher.stop()


async def test_bad_request_is_not_retried(alertmanager: str) -> None:
    config = parse({"notifiers": [{"kind": "alertmanager", "name": "am", "url": alertmanager}]})
    stats = Stats()
    dispatcher = Dispatcher(
        [REGISTRY["alertmanager"].build(config.notifiers[0], NotifyContext("http://x", SystemClock(), 60.0))],
        stats,
        backoff_first=0.01,
    )
    dispatcher.start()
    # An alert without labels is invalid for Alertmanager: 400, and retrying cannot help.
    broken = Alert(
        labels={}, annotations={}, state=AlertState.FIRING, starts_at=SystemClock().now(), fingerprint="0"
    )
    dispatcher.submit(group_of(broken))
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    assert stats.notifications[("am", "failed")] == 1
    assert stats.notifications[("am", "retry")] == 0
