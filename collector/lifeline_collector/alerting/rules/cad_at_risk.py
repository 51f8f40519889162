"""CadAtRisk: the agent predicts CAD will be lost (its risk, and the time it expects left)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.alerting.health import cause_text, read_health, seconds_text
from lifeline_collector.alerting.rules.rule import agent_labels, make_finding, position_link
from lifeline_collector.fleet import AgentView


@dataclass(frozen=True, slots=True)
class RiskBands:
    warn: float = 0.5  # risk at which CadAtRisk fires (warning)
    page: float = 0.8  # risk at which it pages (critical)
    page_time_to_loss: float = 60.0  # … or time to loss at most this


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
            make_finding(
                agent, agent_labels(agent, self.name, "warning"), summary, description, link, self.hold
            )
        ]
        if risk >= self.bands.page or ttl <= self.bands.page_time_to_loss:
            labels = agent_labels(agent, self.name, "critical")
            findings.append(make_finding(agent, labels, summary, description, link, self.hold))
        return findings, False
