"""The alert state machine: findings in, lifecycle changes out (pending → firing → resolved).

A finding fires once its rule's threshold is met (``firing``) *and* the condition has held for the
rule's ``for`` (``hold``); until then the alert is pending. The agent already applies hysteresis, so
holds are short (0 s for a critical layer failure: a hard cut pages on the agent's priority batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from lifeline_collector.alerting.alert import Alert, AlertState, Finding, fingerprint


@dataclass(frozen=True, slots=True)
class Change:
    alert: Alert  # the alert in its new state
    previous: AlertState | None  # None: the alert is new


class AlertStates:
    def __init__(self, resolve_hold: float = 0.0) -> None:
        # A firing alert whose condition clears resolves only once it stayed clear this long, so a
        # condition that flickers (a target at high loss answering now and then) pages once.
        self.resolve_hold = resolve_hold
        self._cleared_at: dict[str, float] = {}  # fingerprint → when its condition was last absent first
        self._active: dict[str, Alert] = {}
        self._by_scope: dict[str, dict[str, None]] = {}  # scope → fingerprints, in order

    def active(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda a: (a.starts_at, a.fingerprint))

    def get(self, fp: str) -> Alert | None:
        return self._active.get(fp)

    def of_scope(self, scope: str) -> list[Alert]:
        return [self._active[fp] for fp in self._by_scope.get(scope, ())]

    def scopes(self) -> set[str]:
        return set(self._by_scope)

    def holds(self, scope: str) -> bool:
        """Whether ``scope`` has an alert (pending, firing, or firing through its resolve hold)."""
        return scope in self._by_scope

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Alerts that were active when the collector stopped (from the store) become active again,
        so a restart neither re-pages what already fired nor forgets an acknowledgement."""
        for alert in alerts:
            if alert.state is not AlertState.RESOLVED:
                self._put(alert)

    def _put(self, alert: Alert) -> None:
        self._active[alert.fingerprint] = alert
        self._by_scope.setdefault(alert.scope, {})[alert.fingerprint] = None

    def _drop(self, alert: Alert) -> None:
        del self._active[alert.fingerprint]
        self._cleared_at.pop(alert.fingerprint, None)
        members = self._by_scope.get(alert.scope)
        if members is not None:
            members.pop(alert.fingerprint, None)
            if not members:
                del self._by_scope[alert.scope]

    def update(self, scope: str, findings: Iterable[Finding], now: float) -> list[Change]:
        """Replace what holds for ``scope`` with ``findings``; alerts no longer found resolve."""
        changes: list[Change] = []
        seen: set[str] = set()
        for finding in findings:
            fp = fingerprint(finding.labels)
            if fp in seen:
                continue  # two findings with one label set: the first wins
            seen.add(fp)
            self._cleared_at.pop(fp, None)
            current = self._active.get(fp)
            starts_at = now if current is None else current.starts_at
            fires = finding.firing and now - starts_at >= finding.hold
            if current is None:
                alert = Alert(
                    labels=dict(finding.labels),
                    annotations=dict(finding.annotations),
                    state=AlertState.FIRING if fires else AlertState.PENDING,
                    starts_at=now,
                    fingerprint=fp,
                    scope=scope,
                    fired_at=now if fires else None,
                )
                changes.append(Change(alert, None))
            elif current.state is AlertState.PENDING and fires:
                alert = replace(
                    current, annotations=dict(finding.annotations), state=AlertState.FIRING, fired_at=now
                )
                changes.append(Change(alert, AlertState.PENDING))
            else:
                # Once firing, an alert stays firing until its condition clears (no flapping back
                # to pending when a count dips); only the wording follows the latest finding.
                alert = replace(current, annotations=dict(finding.annotations))
            self._put(alert)
        for fp in list(self._by_scope.get(scope, ())):
            if fp not in seen:
                alert = self._active[fp]
                if alert.state is AlertState.FIRING and self.resolve_hold > 0:
                    cleared = self._cleared_at.setdefault(fp, now)
                    if now - cleared < self.resolve_hold:
                        continue  # still firing: the condition must stay clear for resolve_hold
                self._drop(alert)
                changes.append(Change(replace(alert, state=AlertState.RESOLVED, ends_at=now), alert.state))
        return changes
