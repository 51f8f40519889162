"""What a rule is (``Rule``, ``Waiting``), and what each rule's finding carries: the alert's
labels, a link to the position, and the summary and description a supervisor reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.fleet import AgentView


class Rule(Protocol):
    name: str

    def evaluate(self, agent: AgentView, now: float) -> Iterable[Finding]: ...


@runtime_checkable
class Waiting(Protocol):
    """A rule whose finding for a position can change with time alone (a grace it counts down),
    so the alert tick must not skip that position as quiet while ``waiting`` says so."""

    def waiting(self, scope: str) -> bool: ...


def agent_labels(agent: AgentView, alertname: str, severity: str) -> dict[str, str]:
    labels = {"alertname": alertname, "agent": agent.id, "severity": severity}
    if agent.site:
        labels["site"] = agent.site
    if agent.position:
        labels["position"] = agent.position
    return labels


def position_link(public_url: str, agent: AgentView) -> str:
    return f"{public_url}/positions/{agent.id}"


def make_finding(
    agent: AgentView, labels: dict[str, str], summary: str, description: str, link: str, hold: float
) -> Finding:
    """A firing finding of one position, held ``hold`` seconds before it pages."""
    return Finding(
        scope=agent.id,
        labels=labels,
        annotations={"summary": summary, "description": description, "link": link},
        firing=True,
        hold=hold,
    )
