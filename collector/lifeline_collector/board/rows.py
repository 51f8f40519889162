"""What the board says about each position, read from the fleet view and the alert engine.

One ``Row`` per position: its state (the worst of what the agent judged, what the alert engine
holds and whether it is heard at all), the verdict sentence, time to loss, the backup path, the
open alert and who acknowledged it. Rows are plain data: the page and the live stream render the
same ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lifeline_collector.alerting import health
from lifeline_collector.alerting.alert import Alert, AlertState
from lifeline_collector.alerting.silences import Silence
from lifeline_collector.fleet import AgentView

if TYPE_CHECKING:
    from lifeline_collector.service import Collector

# Worst first: the order of the board and of the counts at its top.
STATES = ("down", "silent", "at_risk", "degraded", "no_data", "maintenance", "ok")
STATE_WORDS = {
    "down": "Down",
    "silent": "Silent",
    "at_risk": "At risk",
    "degraded": "Degraded",
    "no_data": "No data",
    "maintenance": "In maintenance",
    "ok": "OK",
}
RANK = {state: index for index, state in enumerate(STATES)}
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class OpenAlert:
    fingerprint: str
    name: str
    severity: str
    state: str  # pending | firing
    summary: str
    starts_at: float
    acked_by: str
    acked_at: float | None
    ack_comment: str
    silenced: bool


@dataclass(frozen=True, slots=True)
class Row:
    agent: str
    site: str
    position: str
    name: str
    state: str
    verdict: str
    time_to_loss: float | None  # seconds; inf: stable; None: not reported
    backup_ready: bool | None
    on_backup: bool | None
    last_seen: float | None
    alert: OpenAlert | None
    maintenance: str  # the reason of the maintenance window in force, or ""

    @property
    def rank(self) -> int:
        return RANK[self.state]

    @property
    def word(self) -> str:
        return STATE_WORDS[self.state]

    def same(self, other: Row | None) -> bool:
        """Equal for the board: everything a supervisor sees (``last_seen`` moves every report)."""
        if other is None:
            return False
        return (
            self.state == other.state
            and self.verdict == other.verdict
            and _ttl_bucket(self.time_to_loss) == _ttl_bucket(other.time_to_loss)
            and (self.backup_ready, self.on_backup, self.alert, self.maintenance, self.name, self.site)
            == (other.backup_ready, other.on_backup, other.alert, other.maintenance, other.name, other.site)
        )


def _ttl_bucket(seconds: float | None) -> object:
    if seconds is None or not math.isfinite(seconds):
        return seconds
    return health.seconds_text(seconds)


def ttl_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if not math.isfinite(seconds):
        return "stable"
    return health.seconds_text(seconds)


def backup_text(row: Row) -> str:
    if row.on_backup:
        return "on backup now"
    if row.backup_ready is True:
        return "ready"
    if row.backup_ready is False:
        return "not ready"
    return "not measured"


def alert_labels(agent: AgentView) -> dict[str, str]:
    """The labels a position's alerts carry that silences match on."""
    labels = {"agent": agent.id}
    if agent.site:
        labels["site"] = agent.site
    if agent.position:
        labels["position"] = agent.position
    return labels


def _open_alert(service: Collector, alerts: Iterable[Alert], now: float) -> OpenAlert | None:
    ranked = sorted(
        (a for a in alerts if a.state is not AlertState.RESOLVED),
        key=lambda a: (a.state is not AlertState.FIRING, SEVERITY_RANK.get(a.severity, 3), a.starts_at),
    )
    if not ranked:
        return None
    alert = ranked[0]
    ack = service.registry.ack_of(alert.fingerprint, alert.starts_at)
    return OpenAlert(
        fingerprint=alert.fingerprint,
        name=alert.name,
        severity=alert.severity,
        state=alert.state.value,
        summary=alert.annotations.get("summary", alert.name),
        starts_at=alert.starts_at,
        acked_by="" if ack is None else ack.by,
        acked_at=None if ack is None else ack.at,
        ack_comment="" if ack is None else ack.comment,
        silenced=bool(service.registry.silenced_by(alert.labels, now)),
    )


def row_of(
    service: Collector, agent: AgentView, now: float, maintenance: Mapping[str, tuple[Silence, str]]
) -> Row:
    """``maintenance``: maintenance silences by id, with their reasons."""
    judged = health.read_health(agent)
    alerts = service.engine.states.of_scope(agent.id)
    alert = _open_alert(service, alerts, now)
    labels = alert_labels(agent)
    reason = next(
        (why for silence, why in maintenance.values() if silence.mutes(labels, now)),
        "",
    )
    silent_after = service.config.alerting.silent_after
    firing = [a for a in alerts if a.state is AlertState.FIRING]
    silent_alert = next((a for a in firing if a.name == "PositionSilent"), None)
    if agent.last_seen is None:
        state, verdict = "no_data", "never reported"
    elif silent_alert is not None and now - agent.last_seen >= 1.0:
        # The alert engine may know first (heartbeats stop long before batches are missed).
        state = "silent"
        verdict = f"not heard for {health.seconds_text(now - agent.last_seen)}"
    elif now - agent.last_seen >= silent_after:
        state = "silent"
        verdict = f"not heard for {health.seconds_text(now - agent.last_seen)}"
    elif not judged.layers and judged.verdict_layer == "none" and judged.risk is None:
        state, verdict = "no_data", "reports no judgement (agent without the health model?)"
    else:
        verdict = health.cause_text(agent, judged) if judged.verdict_layer != "none" else judged.verdict
        failed = judged.first_failed()
        risk_warn = service.config.alerting.risk_warn
        page_ttl = service.config.alerting.page_time_to_loss
        if any(a.severity == "critical" for a in firing) or (failed is not None and not judged.on_backup):
            state = "down"
        elif (
            any(a.name == "CadAtRisk" for a in alerts)
            or (judged.risk is not None and judged.risk >= risk_warn)
            or (judged.time_to_loss is not None and judged.time_to_loss <= page_ttl)
        ):
            state = "at_risk"
        elif firing or judged.on_backup or any(s in ("degraded", "failed") for s in judged.layers.values()):
            state = "degraded"
        else:
            state = "ok"
    if reason and state != "down" and state != "silent":
        state = "maintenance"
    if not verdict or verdict in ("healthy", "stable"):
        verdict = "healthy" if state in ("ok", "maintenance") else verdict or STATE_WORDS[state]
    return Row(
        agent=agent.id,
        site=agent.site,
        position=agent.position,
        name=agent.display_name,
        state=state,
        verdict=verdict,
        time_to_loss=judged.time_to_loss,
        backup_ready=judged.failover_ready,
        on_backup=judged.on_backup,
        last_seen=agent.last_seen,
        alert=alert,
        maintenance=reason,
    )


def sort_key(row: Row) -> tuple[int, str, str]:
    return (row.rank, row.position.zfill(8), row.agent)


def by_site(rows: Iterable[Row]) -> list[tuple[str, list[Row]]]:
    """Sites worst first (by their worst position, then name); positions worst first within."""
    sites: dict[str, list[Row]] = {}
    for row in rows:
        sites.setdefault(row.site, []).append(row)
    for members in sites.values():
        members.sort(key=sort_key)
    return sorted(sites.items(), key=lambda item: (item[1][0].rank, item[0]))


def counts(rows: Iterable[Row]) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for row in rows:
        out[row.state] += 1
    return out
