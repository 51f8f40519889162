"""Alert rules: each looks at one agent's view and states which conditions hold right now.

Rules do not remember anything; the state machine turns their findings into a lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from lifeline_collector.alerting.model import Finding
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


def _rounds(count: int) -> str:
    return "1 round" if count == 1 else f"{count} rounds"


def cad_failures(agent: AgentView) -> dict[str, tuple[int, str]]:
    """role="cad" targets → (failed rounds in a row, probe kind).

    A target probed over several paths counts as failing only as long as every path fails.
    Per path, the agent's own failure count and the collector's count of success == 0 samples
    agree when nothing is lost; the larger is used so neither a missing metric nor a lost batch
    hides a failure.
    """
    per_path: dict[tuple[str, str], tuple[int, str]] = {}
    for name in ("lifeline_probe_consecutive_failures", "lifeline_probe_success"):
        for state in agent.named(name):
            if state.labels.get("role") != "cad":
                continue
            key = (state.labels.get("target", ""), state.labels.get("path", ""))
            count = int(state.value) if name == "lifeline_probe_consecutive_failures" else state.zero_streak
            previous = per_path.get(key, (0, ""))[0]
            per_path[key] = (max(previous, count), state.labels.get("kind", ""))
    out: dict[str, tuple[int, str]] = {}
    for (target, _path), (count, kind) in per_path.items():
        if target not in out or count < out[target][0]:
            out[target] = (count, kind)
    return out


class CadTargetUnreachable:
    """A CAD target failing: pending from the first failed round, firing at ``failures`` rounds."""

    name = "CadTargetUnreachable"

    def __init__(self, failures: int, public_url: str) -> None:
        self.failures = failures
        self.public_url = public_url

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        for target, (count, kind) in sorted(cad_failures(agent).items()):
            if count < 1:
                continue
            labels = agent_labels(agent, self.name, "critical")
            labels["target"] = target
            labels["role"] = "cad"
            how = f" ({kind} probe)" if kind else ""
            yield Finding(
                scope=agent.id,
                labels=labels,
                annotations={
                    "summary": f"{agent.display_name}: CAD server {target} unreachable for {_rounds(count)}",
                    "description": (
                        f"The agent's probes{how} to the CAD server {target} failed {_rounds(count)}"
                        " in a row."
                        " The telecommunicator may be unable to work CAD: call the position and be ready"
                        " to move its calls."
                    ),
                    "link": position_link(self.public_url, agent),
                },
                firing=count >= self.failures,
            )


class PositionSilent:
    """No request from an agent for ``silent_after``: worded from what it last reported."""

    name = "PositionSilent"

    def __init__(self, silent_after: float, public_url: str, started_at: float | None = None) -> None:
        self.silent_after = silent_after
        self.public_url = public_url
        # Silence is counted from the collector's own start at the earliest: after a restart the
        # agents get silent_after to reach it again before anyone is paged.
        self.started_at = started_at

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        if agent.last_seen is None:
            return  # registered but never reported: nothing to fall silent from
        silent = now - agent.last_seen
        heard_or_started = max(agent.last_seen, self.started_at or agent.last_seen)
        if now - heard_or_started < self.silent_after:
            return
        last = last_known_state(agent)
        heard = datetime.fromtimestamp(agent.last_seen, UTC).strftime("%H:%M:%S UTC")
        yield Finding(
            scope=agent.id,
            labels=agent_labels(agent, self.name, "critical"),
            annotations={
                "summary": f"{agent.display_name}: silent for {silent:.0f} s; last report: {last}",
                "description": (
                    f"No report from the position's agent since {heard} ({silent:.0f} s). Its last report"
                    f" said: {last}. The laptop, its connection or the agent is down: call the position."
                ),
                "link": position_link(self.public_url, agent),
            },
            firing=True,
        )


def last_known_state(agent: AgentView) -> str:
    """A short sentence from the agent's latest series, for an agent that went dark."""
    parts: list[str] = []
    latest = None  # the newest verdict: older label sets linger in the store with older timestamps
    for verdict in agent.named("lifeline_verdict_info"):
        if verdict.value == 1 and (latest is None or verdict.ts_ms > latest.ts_ms):
            latest = verdict
    if latest is not None and latest.labels.get("layer", "none") != "none":
        parts.append(latest.labels.get("verdict") or f"{latest.labels.get('layer')} failing")
    for target, (count, _kind) in sorted(cad_failures(agent).items()):
        parts.append(
            f"CAD server {target} failing for {_rounds(count)}" if count else f"CAD server {target} reachable"
        )
    for ready in agent.named("lifeline_failover_ready"):
        parts.append("backup path ready" if ready.value == 1 else "backup path not ready")
    for on_ac in agent.named("lifeline_power_on_ac"):
        if on_ac.value == 0:
            parts.append("laptop on battery")
    return "; ".join(parts) if parts else "no measurements yet"
