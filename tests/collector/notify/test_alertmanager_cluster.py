"""An Alertmanager cluster as the notifier's peer: every member gets every post, the pair pages once."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
from collector_kit import T0, free_port, running_receiver
from notify_kit import ALERTMANAGER, running_alertmanager

from lifeline_collector.alerting.alert import Alert, AlertState, fingerprint, group_of
from lifeline_collector.clock import ManualClock, SystemClock
from lifeline_collector.config import ConfigError, parse
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify import REGISTRY, NotifyContext
from lifeline_collector.notify.alertmanager import AlertmanagerNotifier

pytestmark = pytest.mark.anyio


def alert(state: AlertState = AlertState.FIRING, starts_at: float = T0) -> Alert:
    labels = {"alertname": "PositionSilent", "agent": "pos-7", "site": "north", "severity": "critical"}
    return Alert(
        labels=labels,
        annotations={"summary": "Position 7 (north) is silent"},
        state=state,
        starts_at=starts_at,
        ends_at=None if state is AlertState.FIRING else starts_at + 60,
        fingerprint=fingerprint(labels),
        scope="pos-7",
    )


def notifier(urls: list[str], clock: ManualClock | SystemClock | None = None) -> AlertmanagerNotifier:
    config = parse({"notifiers": [{"kind": "alertmanager", "name": "am", "url": urls, "timeout": "2s"}]})
    built = REGISTRY["alertmanager"].build(
        config.notifiers[0], NotifyContext("http://x", clock or ManualClock(T0), 60.0)
    )
    assert isinstance(built, AlertmanagerNotifier)
    built.backoff_first = 0.01
    return built


def test_url_may_list_the_members_of_a_cluster() -> None:
    config = parse(
        {"notifiers": [{"kind": "alertmanager", "name": "am", "url": ["http://a:9093", "http://b:9093"]}]}
    )
    assert config.notifiers[0].urls == ("http://a:9093", "http://b:9093")
    assert config.notifiers[0].url == "http://a:9093"
    for bad, why in (
        ([], "must name at least one URL"),
        (["http://a:9093", "http://a:9093"], "lists the same URL twice"),
        (["http://a:9093", "ftp://b"], "must be an http:// or https:// URL"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse({"notifiers": [{"kind": "alertmanager", "name": "am", "url": bad}]})
    with pytest.raises(ConfigError, match=r"notifiers\[0\]\.url: must be a string"):
        parse({"notifiers": [{"kind": "webhook", "name": "w", "url": ["http://a/x", "http://b/x"]}]})


async def test_delivered_when_one_member_accepts_and_the_other_catches_up_in_order() -> None:
    with running_receiver() as down, running_receiver() as up:
        down.statuses = [503, 503]
        am = notifier([down.url, up.url])
        try:
            await am.send(group_of(alert()))  # one accepted: delivered, no error for the dispatcher
            await am.send(group_of(alert(AlertState.RESOLVED)))  # queued behind the first for `down`
            assert len(up.requests) == 2
            deadline = time.monotonic() + 10
            while len(down.requests) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            await am.aclose()
        bodies = down.bodies()
        assert len(bodies) == 4  # 503, 503, then the firing post, then the resolved one
        assert bodies[2] == up.bodies()[0]
        assert bodies[3] == up.bodies()[1]


async def test_no_member_accepting_is_a_retryable_failure() -> None:
    with running_receiver() as first:
        first.statuses = [503]
        am = notifier([first.url, f"http://127.0.0.1:{free_port()}"])
        try:
            with pytest.raises(NotifyError) as caught:
                await am.send(group_of(alert()))
        finally:
            await am.aclose()
    assert caught.value.retryable
    assert "no Alertmanager accepted" in caught.value.reason


def _members(url: str) -> int:
    status = httpx.get(f"{url}/api/v2/status", timeout=5).json()
    return len(status["cluster"].get("peers") or [])


def _active(url: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{url}/api/v2/alerts", params={"filter": 'agent="pos-7"'}, timeout=5)
    answer.raise_for_status()
    alerts: list[dict[str, object]] = answer.json()
    return alerts


@pytest.mark.system
@pytest.mark.skipif(shutil.which(ALERTMANAGER) is None, reason="prometheus-alertmanager is not installed")
async def test_a_clustered_pair_gets_the_alert_from_both_sides_and_pages_once(tmp_path: Path) -> None:
    with running_receiver() as hook:
        routing = (
            "route:\n  receiver: hook\n  group_by: [alertname, agent]\n  group_wait: 0s\n"
            "  group_interval: 1m\n  repeat_interval: 1h\n"
            f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook.url}\n"
            "        send_resolved: false\n"
        )
        gossip_a, gossip_b = free_port(), free_port()
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with (
            running_alertmanager(tmp_path / "a", config_text=routing, cluster=(gossip_a, [gossip_b])) as a,
            running_alertmanager(tmp_path / "b", config_text=routing, cluster=(gossip_b, [gossip_a])) as b,
        ):
            deadline = time.monotonic() + 30
            while not (_members(a) == 2 and _members(b) == 2):
                assert time.monotonic() < deadline, "the two Alertmanagers never formed a cluster"
                await asyncio.sleep(0.1)
            am = notifier([a, b], SystemClock())
            try:
                await am.send(group_of(alert(starts_at=time.time())))
            finally:
                await am.aclose()
            # Alerts are not gossiped between members: each holds it because each was sent it.
            assert len(_active(a)) == 1
            assert len(_active(b)) == 1
            assert await asyncio.to_thread(hook.got.wait, 30), "no notification from the cluster"
            # The second member waits its peer-timeout (2 s) and finds the first one's entry in the
            # shared notification log; a window well past that shows it stayed quiet.
            await asyncio.sleep(6)
    assert len(hook.requests) == 1
    (page,) = hook.bodies()
    assert page["status"] == "firing"
    assert [item["labels"]["agent"] for item in page["alerts"]] == ["pos-7"]
