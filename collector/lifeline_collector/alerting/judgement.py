"""Rules from the agent's judgement: CAD at risk, a layer failed, no working backup.

Each summary is one sentence a supervisor reads in two seconds: the position and site, what is
broken, how bad, the time left and whether the backup is ready —

    Position 12 (north) will likely lose CAD within 45 s — VPN tunnel losing packets (loss 18 %);
    hotspot ready.
    Position 12 (north) lost CAD — home router unreachable; hotspot not ready.

Rules hold no memory (the state machine does) and read only the latest stored series.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from lifeline_collector.alerting.health import (
    Health,
    battery_text,
    cause_text,
    read_health,
    seconds_text,
)
from lifeline_collector.alerting.model import Finding
from lifeline_collector.alerting.rules import agent_labels, position_link
from lifeline_collector.fleet import AgentView
from lifeline_wire.layers import AGENCY_SIDE, CAD_PATH, FAILED_TEXT, HOME_SIDE


@dataclass(frozen=True, slots=True)
class RiskBands:
    warn: float = 0.5  # risk at which CadAtRisk fires (warning)
    page: float = 0.8  # risk at which it pages (critical)
    page_time_to_loss: float = 60.0  # … or time to loss at most this


def _finding(
    agent: AgentView, labels: dict[str, str], summary: str, description: str, link: str, hold: float
) -> Finding:
    return Finding(
        scope=agent.id,
        labels=labels,
        annotations={"summary": summary, "description": description, "link": link},
        firing=True,
        hold=hold,
    )


class CadAtRisk:
    """The agent predicts CAD will be lost (risk ≥ warn with a finite time to loss).

    Two label sets, like a pair of Prometheus rules: ``severity=warning`` from the warn band and
    ``severity=critical`` from the page band (or little time left); the critical one inhibits the
    warning of the same position, so a worsening position pages once more, not twice.
    """

    name = "CadAtRisk"

    # A prediction worth a page leaves the supervisor time to act. With less than this left and no
    # warning out yet, it is a hard cut in progress: PositionLayerFailed names it within seconds,
    # and one page ("lost CAD — home router unreachable") beats two.
    min_lead = 3.0
    # … unless no layer fails for this long after: then the path is dying without being cut (a
    # rising loss that the agent's trend saw late, past the level CAD survives), no other alert
    # will say so until CAD is gone, and the supervisor hears "is losing CAD now" at once.
    cut_grace = 4.0

    def __init__(self, bands: RiskBands, public_url: str, hold: float = 0.0) -> None:
        self.bands = bands
        self.public_url = public_url
        self.hold = hold
        self._warned: set[str] = set()  # positions this rule found at risk at its last evaluation
        # position → when it was first found at risk with too little lead (its grace running)
        self._too_late: dict[str, float] = {}

    def waiting(self, scope: str) -> bool:
        """True while a position's finding may change with time alone (its grace is running)."""
        return scope in self._too_late

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        findings, waiting = self._evaluate(agent, now)
        if findings:
            self._warned.add(agent.id)
        else:
            self._warned.discard(agent.id)
        if not waiting:
            self._too_late.pop(agent.id, None)
        yield from findings

    def _evaluate(self, agent: AgentView, now: float) -> tuple[list[Finding], bool]:
        """The findings, and whether the position is in its grace (nothing yet, maybe soon)."""
        health = read_health(agent)
        risk, ttl = health.risk, health.time_to_loss
        if risk is None or ttl is None or risk < self.bands.warn or not math.isfinite(ttl):
            return [], False
        if health.first_failed() is not None:
            return [], False  # already lost: PositionLayerFailed says so
        late = ttl < self.min_lead and agent.id not in self._warned
        if late and now - self._too_late.setdefault(agent.id, now) < self.cut_grace:
            return [], True
        cause = cause_text(agent, health)
        backup = health.backup_phrase()
        if ttl < 1.0 or late:
            # The agent already sees CAD going (its layer has not yet held long enough to be judged
            # failed): "within 0 s" would read as a glitch, so say what is happening.
            summary = f"{agent.display_name} is losing CAD now — {cause}; {backup}."
        else:
            summary = (
                f"{agent.display_name} will likely lose CAD within {seconds_text(ttl)} — {cause}; {backup}."
            )
        description = (
            f"The agent on {agent.display_name} estimates a {risk * 100:.0f} % risk of losing CAD within"
            f" {seconds_text(ttl)}. Cause: {cause}. Backup: {backup}."
            " Get ready to move the position's calls; if the hotspot is ready the telecommunicator can"
            " switch to it now."
        )
        link = position_link(self.public_url, agent)
        findings = [
            _finding(agent, agent_labels(agent, self.name, "warning"), summary, description, link, self.hold)
        ]
        if risk >= self.bands.page or ttl <= self.bands.page_time_to_loss:
            labels = agent_labels(agent, self.name, "critical")
            findings.append(_finding(agent, labels, summary, description, link, self.hold))
        return findings, False


class PositionLayerFailed:
    """A layer on the way to CAD failed (critical), or the position runs on battery (warning).

    The ``layer`` label is the agent's verdict layer (the cause), or the first failed layer when the
    verdict names none on the path. A position already running on the hotspot with the agency side
    fine still reaches CAD: that is a warning ("no second path left"), not a lost position.
    """

    name = "PositionLayerFailed"

    def __init__(self, public_url: str, hold: float = 0.0, warning_hold: float = 0.0) -> None:
        self.public_url = public_url
        self.hold = hold
        self.warning_hold = warning_hold

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        health = read_health(agent)
        link = position_link(self.public_url, agent)
        failed = health.first_failed()
        # Home power out explains the home network, router and ISP link going down with it: one
        # page that names the power, not a page for the router and a warning for the battery.
        power_cause = health.verdict_layer == "power" and failed in HOME_SIDE
        if failed is not None:
            named = health.verdict_layer in CAD_PATH or power_cause
            layer = health.verdict_layer if named else failed
            cause = cause_text(agent, health) if named else FAILED_TEXT[failed]
            labels = agent_labels(agent, self.name, "critical")
            labels["layer"] = layer
            if layer == "dns" and health.state("cad") == "ok":
                # The CAD session holds without DNS; only a reconnect would need the name. Worth
                # knowing, not worth moving calls: a warning, not a page.
                labels["severity"] = "warning"
                summary = (
                    f"{agent.display_name}: {cause} — CAD still up; a reconnect would fail until DNS answers."
                )
                action = "CAD works for now; tell IT the agency resolver is not answering this position."
                hold = self.warning_hold
            elif health.on_backup and health.first_failed(AGENCY_SIDE) is None:
                labels["severity"] = "warning"
                summary = (
                    f"{agent.display_name} is running on the hotspot — {cause};"
                    " CAD still up, no second path left."
                )
                action = "CAD works over the hotspot for now; if it weakens too, move the position's calls."
                hold = self.warning_hold
            else:
                summary = f"{agent.display_name} lost CAD — {cause}; {health.backup_phrase()}."
                action = "Move the position's calls now and call the telecommunicator" + (
                    " (they can switch to the hotspot)." if health.failover_ready else "."
                )
                hold = self.hold
            description = (
                f"The agent on {agent.display_name} reports the {layer} layer failed: {cause}."
                f" Backup: {health.backup_phrase()}. {action}"
            )
            yield _finding(agent, labels, summary, description, link, hold)
        power = health.state("power")
        if power in ("degraded", "failed") and not power_cause:
            labels = agent_labels(agent, self.name, "critical" if power == "failed" else "warning")
            labels["layer"] = "power"
            cad = "CAD lost" if failed is not None else "CAD still up"
            what = "laptop battery almost empty" if power == "failed" else "on battery"
            summary = (
                f"{agent.display_name} {'has its' if power == 'failed' else 'is'} {what} — home power out"
                f"{battery_text(health)}; {cad}, {health.backup_phrase()}."
            )
            description = (
                f"The laptop at {agent.display_name} lost mains power{battery_text(health)}; the home"
                " router is likely down too. Ask the telecommunicator to plug in or to move to the"
                " center before the battery runs out."
            )
            yield _finding(
                agent,
                labels,
                summary,
                description,
                link,
                self.hold if power == "failed" else self.warning_hold,
            )


class FailoverNotReady:
    """The backup path failed while the primary is fine: nothing to fail over to (low urgency)."""

    name = "FailoverNotReady"

    def __init__(self, public_url: str, hold: float = 60.0) -> None:
        self.public_url = public_url
        self.hold = hold

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        health = read_health(agent)
        if not health.layers:
            return  # without the agent's layer states "the primary is fine" is not known
        backup = health.state("backup")
        broken = backup == "failed" or (backup == "unknown" and health.failover_ready is False)
        if not broken or health.on_backup or health.first_failed() is not None:
            return
        reason = _backup_reason(health)
        labels = agent_labels(agent, self.name, "warning")
        labels["urgency"] = "low"
        yield _finding(
            agent,
            labels,
            f"{agent.display_name} has no working backup — {reason}; primary fine, CAD up.",
            (
                f"The backup path of {agent.display_name} cannot reach the VPN concentrator ({reason})."
                " CAD works over the primary, but a primary failure now would drop the position."
                " Ask the telecommunicator to check the hotspot (charged, switched on, signal)."
            ),
            position_link(self.public_url, agent),
            self.hold,
        )


def _backup_reason(health: Health) -> str:
    if health.verdict_layer == "backup" and health.verdict:
        return health.verdict.removesuffix(" — primary fine")
    return FAILED_TEXT["backup"]
