"""CadTargetUnreachable: the agent's probes of a CAD server fail round after round."""

from __future__ import annotations

from collections.abc import Iterator

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.alerting.health import read_health
from lifeline_collector.alerting.rules.rule import agent_labels, position_link
from lifeline_collector.fleet import AgentView


def rounds(count: int) -> str:
    return "1 round" if count == 1 else f"{count} rounds"


def _whole(value: float) -> int:
    """A stored count as an int; a non-finite one (a store written before the wire refused them)
    counts 0, so a silent position's page is still worded from the rest of what it reported."""
    return int(value) if value - value == 0 else 0  # inf - inf and nan - nan are NaN


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
            count = state.zero_streak if name == "lifeline_probe_success" else _whole(state.value)
            previous = per_path.get(key, (0, ""))[0]
            per_path[key] = (max(previous, count), state.labels.get("kind", ""))
    out: dict[str, tuple[int, str]] = {}
    for (target, _path), (count, kind) in per_path.items():
        if target not in out or count < out[target][0]:
            out[target] = (count, kind)
    return out


class CadTargetUnreachable:
    """A CAD target failing: pending from the first failed round, firing at ``failures`` rounds —
    unless the agent judges its CAD layer and does not call it failed: then the failed rounds are
    loss the CAD session rides out (4 s of 40 % loss fails a TCP connect four times in a row one
    time in six), and a real loss of CAD pages as ``PositionLayerFailed`` with its cause."""

    name = "CadTargetUnreachable"

    def __init__(self, failures: int, public_url: str) -> None:
        self.failures = failures
        self.public_url = public_url

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        failing = sorted(cad_failures(agent).items())
        if not any(count >= 1 for _target, (count, _kind) in failing):
            return
        judged = read_health(agent)
        cad_fine = bool(judged.layers) and judged.state("cad") != "failed"
        for target, (count, kind) in failing:
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
                    "summary": f"{agent.display_name}: CAD server {target} unreachable for {rounds(count)}",
                    "description": (
                        f"The agent's probes{how} to the CAD server {target} failed {rounds(count)}"
                        " in a row."
                        " The telecommunicator may be unable to work CAD: call the position and be ready"
                        " to move its calls."
                    ),
                    "link": position_link(self.public_url, agent),
                },
                firing=count >= self.failures and not cad_fine,
            )
