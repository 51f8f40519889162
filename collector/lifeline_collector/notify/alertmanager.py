"""Alertmanager notifier: a client of ``POST /api/v2/alerts``, like Prometheus itself.

Firing alerts are re-sent every resend_interval with ``endsAt`` a few intervals ahead (as
Prometheus does), so Alertmanager resolves them on its own if the collector dies; a resolved alert
is sent once with its real ``endsAt``.

``url`` may list every member of an Alertmanager cluster: each alert is posted to all of them, as
Alertmanager's documentation asks of clients, and the cluster deduplicates the notification. A
post is delivered when at least one member accepted it; a member that failed gets it again from
its own lane (the dispatcher's backoff), in order, so a dead member never delays the live ones and
never receives an older state after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec

from lifeline_collector.alerting.alert import AlertGroup, AlertState, rfc3339
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify.base import (
    NotifierConfig,
    NotifierKind,
    NotifyContext,
    read_common,
    redact,
    register,
    safe_url,
)
from lifeline_collector.notify.dispatch import BACKOFF_FIRST, notify_policy
from lifeline_collector.notify.http import make_client, post_json
from lifeline_wire.tomlcfg import Section

API_PATH = "/api/v2/alerts"
ENDS_AT_INTERVALS = 4  # Prometheus: endsAt = now + 4 × max(evaluation interval, resend delay)
LANE_LIMIT = 1_000  # posts held for one unreachable member; the oldest go first when full

log = logging.getLogger("lifeline_collector.notify")


def read_config(section: Section) -> NotifierConfig:
    return NotifierConfig(**read_common(section, "alertmanager", url_list=True))  # type: ignore[arg-type]


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


@dataclass(slots=True)
class _Held:
    """A post one member still owes: the body and the attempts it has left."""

    body: bytes
    attempts_left: int


class _Member:
    """One Alertmanager of a cluster, with its lane of posts it has not accepted yet."""

    def __init__(self, url: str) -> None:
        self.url = alerts_url(url)
        self.lane: deque[_Held] = deque()
        self.task: asyncio.Task[None] | None = None


class AlertmanagerNotifier:
    kind = "alertmanager"
    wants_resend = True
    backoff_first = BACKOFF_FIRST  # of a member's lane; the dispatcher's policy

    def __init__(self, config: NotifierConfig, context: NotifyContext) -> None:
        self.config = config
        self.name = config.name
        self.secrets = config.secrets()
        self.max_attempts = config.max_attempts
        self.context = context
        self.members = tuple(_Member(url) for url in (config.urls or (config.url,)))
        self.url = self.members[0].url
        self._client = make_client(config)

    async def send(self, group: AlertGroup) -> None:
        body = msgspec.json.encode(payload(group, self.context))
        if len(self.members) == 1:
            await post_json(self._client, self.config, self.url, body)
            return
        # A member still working through its lane gets this post behind the older ones.
        direct = [member for member in self.members if not member.lane]
        outcomes = await asyncio.gather(
            *(post_json(self._client, self.config, member.url, body) for member in direct),
            return_exceptions=True,
        )
        errors: list[NotifyError] = []
        for outcome in outcomes:
            if isinstance(outcome, NotifyError):
                errors.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        if len(errors) == len(direct):  # nobody accepted it: the dispatcher retries the whole post
            raise self._none_accepted(errors, lagging=len(self.members) - len(direct))
        for member, outcome in zip(direct, outcomes, strict=True):
            if isinstance(outcome, NotifyError):
                if outcome.retryable:
                    self._hold(member, body, self.max_attempts - 1, outcome)
                else:
                    log.error("%s; not retried", redact(str(outcome), self.secrets))
        for member in self.members:
            if member not in direct:
                self._hold(member, body, self.max_attempts, None)

    def _none_accepted(self, errors: list[NotifyError], lagging: int) -> NotifyError:
        reasons = [error.reason for error in errors]
        if lagging:
            reasons.append(f"{lagging} member(s) still retrying older posts")
        waits = [error.retry_after for error in errors if error.retry_after is not None]
        return NotifyError(
            self.name,
            "no Alertmanager accepted the alerts: " + "; ".join(reasons),
            retryable=lagging > 0 or any(error.retryable for error in errors),
            status=errors[0].status if len(errors) == 1 else None,
            retry_after=min(waits) if waits else None,
        )

    def _hold(self, member: _Member, body: bytes, attempts_left: int, error: NotifyError | None) -> None:
        if attempts_left < 1:
            if error is not None:
                log.error("%s; gave up", redact(str(error), self.secrets))
            return
        if len(member.lane) >= LANE_LIMIT:
            member.lane.popleft()
            log.warning("notifier %s: %s is behind, dropped its oldest post", self.name, safe_url(member.url))
        member.lane.append(_Held(body, attempts_left))
        if member.task is None or member.task.done():
            first_wait = error.retry_after if error is not None else None
            member.task = asyncio.create_task(
                self._drain_lane(member, first_wait), name=f"notifier-{self.name}-member"
            )

    async def _drain_lane(self, member: _Member, wait: float | None) -> None:
        """Post the member's held bodies oldest first, each until accepted or out of attempts."""
        policy = notify_policy(self.backoff_first)
        failures = 0  # failed posts to this member in a row (the wait grows until one is accepted)
        await asyncio.sleep(policy.delay(failures, wait))
        while member.lane:
            held = member.lane[0]
            try:
                await post_json(self._client, self.config, member.url, held.body)
            except NotifyError as exc:
                held.attempts_left -= 1
                message = redact(str(exc), self.secrets)
                if not exc.retryable or held.attempts_left < 1:
                    log.error("%s; gave up on one post", message)
                    member.lane.popleft()
                    continue
                log.warning("%s; %d attempt(s) left", message, held.attempts_left)
                failures += 1
                await asyncio.sleep(policy.delay(failures, exc.retry_after))
            else:
                member.lane.popleft()
                failures = 0

    async def aclose(self) -> None:
        for member in self.members:
            if member.task is not None:
                member.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await member.task
        await self._client.aclose()


register(
    NotifierKind(
        kind="alertmanager",
        read_config=read_config,
        build=AlertmanagerNotifier,
        summary="POST alerts to Alertmanager's /api/v2/alerts at every url (re-sent while firing)",
    )
)
