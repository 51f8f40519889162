"""Alertmanager notifier: a client of ``POST /api/v2/alerts``, like Prometheus itself.

Firing alerts are re-sent every resend_interval with ``endsAt`` a few intervals ahead (as
Prometheus does), so Alertmanager resolves them on its own if the collector dies; a resolved alert
is sent once with its real ``endsAt``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lifeline_collector.alerting.model import AlertGroup, AlertState, rfc3339
from lifeline_collector.notify.base import (
    NotifierConfig,
    NotifierKind,
    NotifyContext,
    read_common,
    register,
)
from lifeline_collector.notify.http import make_client, post_json
from lifeline_wire.tomlcfg import Section

API_PATH = "/api/v2/alerts"
ENDS_AT_INTERVALS = 4  # Prometheus: endsAt = now + 4 × max(evaluation interval, resend delay)


def read_config(section: Section) -> NotifierConfig:
    return NotifierConfig(**read_common(section, "alertmanager"))  # type: ignore[arg-type]


def alerts_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def payload(group: AlertGroup, context: NotifyContext) -> list[dict[str, Any]]:
    now = context.clock.now()
    out: list[dict[str, Any]] = []
    for alert in group.alerts:
        if alert.state is AlertState.FIRING:
            ends_at = now + ENDS_AT_INTERVALS * context.resend_interval
        else:
            ends_at = alert.ends_at if alert.ends_at is not None else now
        out.append(
            {
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "startsAt": rfc3339(alert.starts_at),
                "endsAt": rfc3339(ends_at),
                "generatorURL": alert.annotations.get("link", context.external_url),
            }
        )
    return out


class AlertmanagerNotifier:
    kind = "alertmanager"
    wants_resend = True

    def __init__(self, config: NotifierConfig, context: NotifyContext) -> None:
        self.config = config
        self.name = config.name
        self.secrets = config.secrets()
        self.max_attempts = config.max_attempts
        self.context = context
        self.url = alerts_url(config.url)
        self._client = make_client(config)

    async def send(self, group: AlertGroup) -> None:
        body = msgspec.json.encode(payload(group, self.context))
        await post_json(self._client, self.config, self.url, body)

    async def aclose(self) -> None:
        await self._client.aclose()


register(
    NotifierKind(
        kind="alertmanager",
        read_config=read_config,
        build=AlertmanagerNotifier,
        summary="POST alerts to Alertmanager's /api/v2/alerts at url (re-sent while firing)",
    )
)
