"""Webhook notifier against a real loopback receiver: Alertmanager's payload, retries, no secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from collector_kit import T0, Receiver, free_port

from lifeline_collector.alerting.alert import Alert, AlertState, fingerprint, group_of
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import parse
from lifeline_collector.notify import REGISTRY, NotifyContext
from lifeline_collector.notify.dispatch import Dispatcher
from lifeline_collector.self_metrics import Stats

pytestmark = pytest.mark.anyio

TOKEN = "s3cr3t-pager-token-value"
HEADER_SECRET = "hdr-secret-value-42"


def firing_alert() -> Alert:
    labels = {
        "alertname": "CadTargetUnreachable",
        "agent": "pos-12",
        "site": "north",
        "target": "cad-primary",
    }
    return Alert(
        labels=labels,
        annotations={
            "summary": "Position 12 (north): CAD server cad-primary unreachable for 3 rounds",
            "link": "http://collector.example/positions/pos-12",
        },
        state=AlertState.FIRING,
        starts_at=T0,
        fingerprint=fingerprint(labels),
        scope="pos-12",
    )


def make_dispatcher(tmp_path: Path, url: str, **extra: object) -> tuple[Dispatcher, Stats]:
    token_file = tmp_path / "pager.token"
    token_file.write_text(TOKEN + "\n")
    config = parse(
        {
            "notifiers": [
                {
                    "kind": "webhook",
                    "name": "pager",
                    "url": url,
                    "token_file": str(token_file),
                    "timeout": "2s",
                    "headers": {"X-Site-Key": HEADER_SECRET},
                    **extra,
                }
            ]
        }
    )
    context = NotifyContext("http://collector.example", ManualClock(T0), 60.0)
    stats = Stats()
    notifier = REGISTRY["webhook"].build(config.notifiers[0], context)
    return Dispatcher([notifier], stats, backoff_first=0.01), stats


async def test_payload_is_alertmanager_webhook_v4(tmp_path: Path, receiver: Receiver) -> None:
    dispatcher, stats = make_dispatcher(tmp_path, receiver.url)
    dispatcher.start()
    alert = firing_alert()
    dispatcher.submit(group_of(alert))
    dispatcher.submit(group_of(Alert(**{**_fields(alert), "state": AlertState.RESOLVED, "ends_at": T0 + 90})))
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    firing, resolved = receiver.bodies()
    assert set(firing) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert firing["version"] == "4"
    assert firing["status"] == "firing"
    assert firing["receiver"] == "pager"
    assert firing["externalURL"] == "http://collector.example"
    assert firing["groupLabels"] == alert.labels
    assert firing["commonLabels"] == alert.labels
    assert firing["commonAnnotations"] == alert.annotations
    assert (
        firing["groupKey"]
        == '{}:{agent="pos-12", alertname="CadTargetUnreachable", site="north", target="cad-primary"}'
    )
    assert firing["alerts"] == [
        {
            "status": "firing",
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": "2023-11-14T22:13:20.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://collector.example/positions/pos-12",
            "fingerprint": alert.fingerprint,
        }
    ]
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] == "2023-11-14T22:14:50.000Z"
    headers = {k.lower(): v for k, v in receiver.requests[0]["headers"].items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-site-key"] == HEADER_SECRET
    assert headers["content-type"] == "application/json"
    assert stats.notifications[("pager", "ok")] == 2


async def test_send_resolved_false_skips_resolved(tmp_path: Path, receiver: Receiver) -> None:
    dispatcher, _stats = make_dispatcher(tmp_path, receiver.url, send_resolved=False)
    dispatcher.start()
    alert = firing_alert()
    dispatcher.submit(group_of(Alert(**{**_fields(alert), "state": AlertState.RESOLVED, "ends_at": T0 + 1})))
    dispatcher.submit(group_of(alert, resend=True))  # webhooks do not want resends either
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    assert receiver.requests == []


async def test_5xx_and_429_are_retried_4xx_is_not(tmp_path: Path, receiver: Receiver) -> None:
    dispatcher, stats = make_dispatcher(tmp_path, receiver.url)
    dispatcher.start()
    receiver.statuses[:] = [503, 429]
    dispatcher.submit(group_of(firing_alert()))
    assert await dispatcher.drain(10)
    assert len(receiver.requests) == 3
    assert (stats.notifications[("pager", "retry")], stats.notifications[("pager", "ok")]) == (2, 1)
    receiver.statuses[:] = [400]
    dispatcher.submit(group_of(firing_alert()))
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    assert len(receiver.requests) == 4  # the 400 was not retried
    assert stats.notifications[("pager", "failed")] == 1


async def test_408_is_retried_as_the_shipper_and_remote_write_retry_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    dispatcher, stats = make_dispatcher(tmp_path, receiver.url)
    dispatcher.start()
    receiver.statuses[:] = [408]
    dispatcher.submit(group_of(firing_alert()))
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    assert len(receiver.requests) == 2
    assert (stats.notifications[("pager", "retry")], stats.notifications[("pager", "ok")]) == (1, 1)


async def test_no_secret_in_errors_or_logs(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A dead port (network errors, retried until max_attempts) and an answer echoing the token.
    dead = f"http://user:{HEADER_SECRET}x@127.0.0.1:{free_port()}/hook?key={TOKEN}"
    dispatcher, stats = make_dispatcher(tmp_path, dead, max_attempts=2)
    dispatcher.start()
    dispatcher.submit(group_of(firing_alert()))
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    assert stats.notifications[("pager", "failed")] == 1
    assert stats.notifications[("pager", "retry")] == 1
    receiver.statuses[:] = [401]
    dispatcher, stats = make_dispatcher(tmp_path, receiver.url)
    dispatcher.start()
    dispatcher.submit(group_of(firing_alert()))
    assert await dispatcher.drain(10)
    await dispatcher.stop()
    assert stats.notifications[("pager", "failed")] == 1
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "gave up" in text
    assert "answered 401: Bearer <redacted>" in text
    assert "127.0.0.1" in text
    for secret in (TOKEN, HEADER_SECRET):
        assert secret not in text
        assert secret not in repr(make_dispatcher(tmp_path, receiver.url)[0].notifiers[0].config)  # type: ignore[attr-defined]


def _fields(alert: Alert) -> dict[str, object]:
    return {name: getattr(alert, name) for name in Alert.__slots__}  # type: ignore[attr-defined]
