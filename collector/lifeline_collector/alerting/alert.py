"""What an alert is: labels that identify it, annotations a supervisor reads, and its lifecycle."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class AlertState(StrEnum):
    PENDING = "pending"  # the condition holds but has not lasted long enough to page
    FIRING = "firing"
    RESOLVED = "resolved"


ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end yet"


def rfc3339(seconds: float | None) -> str:
    """Unix seconds → RFC 3339 in UTC with milliseconds; None → Alertmanager's zero time."""
    if seconds is None:
        return ZERO_TIME
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit hash of the label set (order does not matter)."""
    digest = hashlib.sha256()
    for name in sorted(labels):
        digest.update(name.encode())
        digest.update(b"\xff")
        digest.update(labels[name].encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's statement that a condition holds now for one scope (an agent, later a fleet)."""

    scope: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    firing: bool  # False: the condition started but has not yet met the rule's threshold
    hold: float = 0.0  # the rule's ``for``: seconds the condition must hold before it fires


@dataclass(frozen=True, slots=True)
class Alert:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    starts_at: float  # Unix seconds: when the condition started
    ends_at: float | None = None  # set once resolved
    fingerprint: str = ""
    scope: str = ""
    fired_at: float | None = None  # when it became firing

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    def to_json(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "state": self.state.value,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
        }


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """Alerts sent together in one notification. Today one alert per group (grouped by all labels)."""

    key: str
    labels: Mapping[str, str]
    alerts: tuple[Alert, ...]
    resend: bool = False  # a keep-alive of an unchanged firing alert (Alertmanager), not a state change
    # Which notifiers get it (names); None: every notifier (no routes configured or none matched).
    receivers: tuple[str, ...] | None = None
    reason: str = "state"  # state (new firing / resolved), resend, repeat, escalation

    @property
    def status(self) -> str:
        firing = any(alert.state is AlertState.FIRING for alert in self.alerts)
        return AlertState.FIRING.value if firing else AlertState.RESOLVED.value

    def common_labels(self) -> dict[str, str]:
        return _common([alert.labels for alert in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([alert.annotations for alert in self.alerts])


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {key: value for key, value in first.items() if all(m.get(key) == value for m in maps[1:])}


def group_of(
    alert: Alert,
    *,
    resend: bool = False,
    receivers: tuple[str, ...] | None = None,
    reason: str = "",
) -> AlertGroup:
    """One alert as its own group, keyed like Alertmanager's ``group_by: ['...']``."""
    pairs = ", ".join(f'{name}="{alert.labels[name]}"' for name in sorted(alert.labels))
    return AlertGroup(
        key="{}:{" + pairs + "}",
        labels=dict(alert.labels),
        alerts=(alert,),
        resend=resend,
        receivers=receivers,
        reason=reason or ("resend" if resend else "state"),
    )
