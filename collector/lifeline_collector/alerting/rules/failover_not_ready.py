"""FailoverNotReady: the backup path is broken while the primary works — nothing to fail over to."""

from __future__ import annotations

from collections.abc import Iterator

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.alerting.health import Health, read_health
from lifeline_collector.alerting.rules.rule import agent_labels, make_finding, position_link
from lifeline_collector.fleet import AgentView
from lifeline_wire.layers import FAILED_TEXT


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
        yield make_finding(
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
