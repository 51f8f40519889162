"""PositionSilent: a position not heard from, worded from what is known — the paths that were
beating before, and the agent's last judgement."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.alerting.heard import SilencePolicy, last_heard
from lifeline_collector.alerting.rules.cad_target_unreachable import cad_failures, rounds
from lifeline_collector.alerting.rules.rule import agent_labels, position_link
from lifeline_collector.fleet import AgentView
from lifeline_wire.heartbeat import BeatDigest


class PositionSilent:
    """A position not heard from: no heartbeat over any path for ``heartbeat_after`` (agents that
    speak heartbeats), or no batch for ``silent_after`` (older agents). Worded from what is known:
    the paths that were beating before, and the agent's last judgement."""

    name = "PositionSilent"

    def __init__(
        self,
        silent_after: float,
        public_url: str,
        started_at: float | None = None,
        heartbeat_after: float | None = None,
    ) -> None:
        # Silence is counted from the collector's own start at the earliest: after a restart the
        # agents get the threshold to reach it again before anyone is paged.
        self.policy = SilencePolicy(
            silent_after,
            silent_after if heartbeat_after is None else heartbeat_after,
            float("-inf") if started_at is None else started_at,
        )
        self.public_url = public_url
        # Positions whose silence had paged before a restart and that have not been heard since:
        # their alert goes on (same start, same acknowledgement) instead of resolving for the grace.
        self.restored: set[str] = set()

    @property
    def silent_after(self) -> float:
        return self.policy.silent_after

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        heard = last_heard(agent)
        if heard is None:
            return  # registered but never reported: nothing to fall silent from
        if agent.id in self.restored:
            if heard >= self.policy.started_at:
                self.restored.discard(agent.id)  # heard since the restart: judged as usual
            else:
                yield self._finding(agent, now, heard)
                return
        if self.policy.silent(agent, now):
            yield self._finding(agent, now, heard)

    def _finding(self, agent: AgentView, now: float, heard: float) -> Finding:
        silent = now - heard
        at = datetime.fromtimestamp(heard, UTC).strftime("%H:%M:%S UTC")
        beat = agent.beat
        if agent.last_beat is None or beat is None:
            last = last_known_state(agent)
            summary = f"{agent.display_name}: silent for {silent:.0f} s; last report: {last}"
            description = (
                f"No report from the position's agent since {at} ({silent:.0f} s). Its last report"
                f" said: {last}. The laptop, its connection or the agent is down: call the position."
            )
        else:
            paths = _paths_text(agent.beat_paths, heard)
            last = beat_text(beat)
            summary = (
                f"{agent.display_name} went dark {silent:.0f} s ago — nothing over {paths};"
                f" last heard: {last}. Its CAD session is probably lost."
            )
            description = (
                f"No heartbeat from the position's agent over any path since {at} ({silent:.0f} s):"
                f" nothing over {paths}. Its last heartbeat said: {last}. The house has no way out"
                " (home internet and hotspot both gone), or the laptop or the agent is down: call the"
                " position and be ready to move its calls."
            )
        return Finding(
            scope=agent.id,
            labels=agent_labels(agent, self.name, "critical"),
            annotations={
                "summary": summary,
                "description": description,
                "link": position_link(self.public_url, agent),
            },
            firing=True,
        )


PATH_NAMES = {"tunnel": "the VPN", "backup": "the hotspot", "public": "the public endpoint"}
# A path counts as "was beating" if a beat came over it this close to the last beat of all: the
# fallback paths beat every second or so while the primary is fine.
BEATING_WITHIN = 5.0


def _paths_text(paths: Mapping[str, float], last: float) -> str:
    names = [PATH_NAMES.get(p, p) for p in PATH_NAMES if p in paths and last - paths[p] <= BEATING_WITHIN]
    names += [p for p in sorted(paths) if p not in PATH_NAMES and last - paths[p] <= BEATING_WITHIN]
    if not names:
        return "any path"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# How the heartbeat digest's layers read in a sentence (the agent's layer vocabulary).
_LAYER_TEXT = {
    "power": "home power",
    "link": "home network link",
    "router": "home router",
    "internet": "home internet (ISP)",
    "isp": "home internet (ISP)",
    "vpn": "VPN tunnel",
    "agency": "agency network",
    "dns": "agency DNS",
    "cad": "CAD server",
    "backup": "backup path",
}


def beat_text(beat: BeatDigest) -> str:
    """The last heartbeat's digest as a clause: "all layers healthy, backup not ready"."""
    layer, state = beat.layer, beat.state
    if layer in ("", "none") or state == "ok":
        health = "all layers healthy"
    else:
        what = _LAYER_TEXT.get(layer, layer)
        health = f"{what} {'down' if state == 'failed' else 'degraded'}"
    if beat.on_backup:
        backup = "running on the hotspot"
    else:
        ready = beat.backup_ready
        backup = "no backup measured" if ready is None else ("backup ready" if ready else "backup not ready")
    return f"{health}, {backup}"


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
            f"CAD server {target} failing for {rounds(count)}" if count else f"CAD server {target} reachable"
        )
    for ready in agent.named("lifeline_failover_ready"):
        parts.append("backup path ready" if ready.value == 1 else "backup path not ready")
    for on_ac in agent.named("lifeline_power_on_ac"):
        if on_ac.value == 0:
            parts.append("laptop on battery")
    return "; ".join(parts) if parts else "no measurements yet"
