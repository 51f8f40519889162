"""PositionLayerFailed: a layer on the way to CAD failed (critical), or the laptop runs on battery
(warning); the ``layer`` label names the cause."""

from __future__ import annotations

from collections.abc import Iterator

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.alerting.health import battery_text, cause_text, read_health
from lifeline_collector.alerting.rules.rule import agent_labels, make_finding, position_link
from lifeline_collector.fleet import AgentView
from lifeline_wire.layers import AGENCY_SIDE, CAD_PATH, FAILED_TEXT, HOME_SIDE


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
            yield make_finding(agent, labels, summary, description, link, hold)
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
            yield make_finding(
                agent,
                labels,
                summary,
                description,
                link,
                self.hold if power == "failed" else self.warning_hold,
            )
