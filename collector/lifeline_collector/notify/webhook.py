"""Webhook notifier: posts Alertmanager's webhook payload (version "4") so any AM receiver works."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from lifeline_collector.alerting.alert import AlertGroup, AlertState, rfc3339
from lifeline_collector.notify.base import (
    NotifierConfig,
    NotifierKind,
    NotifyContext,
    read_common,
    register,
)
from lifeline_collector.notify.http import make_client, post_json
from lifeline_wire.tomlcfg import Section


@dataclass(frozen=True, slots=True)
class WebhookConfig(NotifierConfig):
    send_resolved: bool = True


def read_config(section: Section) -> NotifierConfig:
    common = read_common(section, "webhook")
    send_resolved = section.flag("send_resolved", True)
    return WebhookConfig(**common, send_resolved=send_resolved)  # type: ignore[arg-type]


def payload(group: AlertGroup, receiver: str, external_url: str) -> dict[str, Any]:
    """The body Alertmanager's webhook receiver sends, field for field."""
    return {
        "version": "4",
        "groupKey": group.key,
        "truncatedAlerts": 0,
        "status": group.status,
        "receiver": receiver,
        "groupLabels": dict(group.labels),
        "commonLabels": group.common_labels(),
        "commonAnnotations": group.common_annotations(),
        "externalURL": external_url,
        "alerts": [
            {
                "status": "firing" if alert.state is AlertState.FIRING else "resolved",
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "startsAt": rfc3339(alert.starts_at),
                "endsAt": rfc3339(alert.ends_at),
                "generatorURL": alert.annotations.get("link", external_url),
                "fingerprint": alert.fingerprint,
            }
            for alert in group.alerts
        ],
    }


class WebhookNotifier:
    kind = "webhook"
    wants_resend = False

    def __init__(self, config: NotifierConfig, context: NotifyContext) -> None:
        self.config = config
        self.name = config.name
        self.secrets = config.secrets()
        self.max_attempts = config.max_attempts
        self.context = context
        self.send_resolved = config.send_resolved if isinstance(config, WebhookConfig) else True
        self._client = make_client(config)

    async def send(self, group: AlertGroup) -> None:
        if group.status == AlertState.RESOLVED.value and not self.send_resolved:
            return
        body = msgspec.json.encode(payload(group, self.name, self.context.external_url))
        await post_json(self._client, self.config, self.config.url, body)

    async def aclose(self) -> None:
        await self._client.aclose()


register(
    NotifierKind(
        kind="webhook",
        read_config=read_config,
        build=WebhookNotifier,
        summary="POST Alertmanager's webhook payload (version 4) to url",
    )
)
