"""The alert state machine: findings in, lifecycle changes out (pending → firing → resolved)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from lifeline_collector.alerting.model import Alert, AlertState, Finding, fingerprint


@dataclass(frozen=True, slots=True)
class Change:
    alert: Alert  # the alert in its new state
    previous: AlertState | None  # None: the alert is new

    @property
    def notifiable(self) -> bool:
        """Supervisors hear about firing, and about resolution of what they heard fire."""
        if self.alert.state is AlertState.FIRING:
            return self.previous is not AlertState.FIRING
        return self.alert.state is AlertState.RESOLVED and self.previous is AlertState.FIRING


class AlertStates:
    def __init__(self) -> None:
        self._active: dict[str, Alert] = {}
        self._last_sent: dict[str, float] = {}

    def active(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda a: (a.starts_at, a.fingerprint))

    def scopes(self) -> set[str]:
        return {alert.scope for alert in self._active.values()}

    def update(self, scope: str, findings: Iterable[Finding], now: float) -> list[Change]:
        """Replace what holds for ``scope`` with ``findings``; alerts no longer found resolve."""
        changes: list[Change] = []
        seen: set[str] = set()
        for finding in findings:
            fp = fingerprint(finding.labels)
            seen.add(fp)
            current = self._active.get(fp)
            state = AlertState.FIRING if finding.firing else AlertState.PENDING
            if current is None:
                alert = Alert(
                    labels=dict(finding.labels),
                    annotations=dict(finding.annotations),
                    state=state,
                    starts_at=now,
                    fingerprint=fp,
                    scope=scope,
                    fired_at=now if finding.firing else None,
                )
                changes.append(Change(alert, None))
            elif current.state is AlertState.PENDING and finding.firing:
                alert = replace(current, annotations=dict(finding.annotations), state=state, fired_at=now)
                changes.append(Change(alert, AlertState.PENDING))
            else:
                # Once firing, an alert stays firing until its condition clears (no flapping back
                # to pending when a count dips); only the wording follows the latest finding.
                alert = replace(current, annotations=dict(finding.annotations))
            self._active[fp] = alert
            if alert.state is AlertState.FIRING and fp not in self._last_sent:
                self._last_sent[fp] = now
        for fp, alert in list(self._active.items()):
            if alert.scope == scope and fp not in seen:
                del self._active[fp]
                self._last_sent.pop(fp, None)
                changes.append(Change(replace(alert, state=AlertState.RESOLVED, ends_at=now), alert.state))
        return changes

    def due_for_resend(self, now: float, interval: float) -> list[Alert]:
        due: list[Alert] = []
        for fp, alert in self._active.items():
            if alert.state is AlertState.FIRING and now - self._last_sent.get(fp, now) >= interval:
                self._last_sent[fp] = now
                due.append(alert)
        return due
