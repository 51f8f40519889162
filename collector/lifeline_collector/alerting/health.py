"""The agent's own judgement, read back from the latest stored series of one position.

The agent decides at the edge (design decision 1): per-layer state, the verdict (its layer and
cause as fields, and a sentence for people), the risk of losing CAD and the time left, whether the
backup path is ready. Rules read those latest values — never the event stream, so a lost event
cannot leave an alert stuck — and add the few measured figures a supervisor needs ("loss 18 %")
from the probe series of the same layer, chosen by the verdict's cause. Decisions read fields
only, never the agent's words: the sentence is shown, not parsed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from lifeline_collector.fleet import AgentView, SeriesState
from lifeline_wire.catalog.health import STATES
from lifeline_wire.layers import CAD_PATH, FAILED_TEXT, cause_of, pct, series_layer

STATE_NAMES = {value: name for name, value in STATES.items()}


@dataclass(frozen=True, slots=True)
class Health:
    """One position's latest judgement; None where the agent has not said (older agent, no data)."""

    layers: Mapping[str, str]  # layer → ok | degraded | failed | unknown
    verdict_layer: str  # the first broken layer, "none" when healthy or not reported
    verdict: str  # the agent's sentence without its numbers ("VPN tunnel losing packets"), to show
    verdict_cause: str  # what is wrong with it (lifeline_wire.layers.CAUSES); "unknown" if not said
    risk: float | None  # 0..1
    time_to_loss: float | None  # seconds, +Inf when stable
    failover_ready: bool | None
    on_backup: bool | None
    battery_ratio: float | None
    battery_left: float | None  # seconds

    def state(self, layer: str) -> str:
        return self.layers.get(layer, "unknown")

    def first_failed(self, layers: tuple[str, ...] = CAD_PATH) -> str | None:
        """The first failed layer on the way to CAD (power excluded), or None."""
        return next((layer for layer in layers if self.layers.get(layer) == "failed"), None)

    def backup_phrase(self) -> str:
        """ "hotspot ready" / "hotspot not ready" / "running on the hotspot"."""
        if self.on_backup:
            return "running on the hotspot"
        if self.failover_ready is True:
            return "hotspot ready"
        if self.failover_ready is False or self.state("backup") == "failed":
            return "hotspot not ready"
        return "no backup path measured"


def _latest(agent: AgentView, name: str) -> SeriesState | None:
    best: SeriesState | None = None
    for state in agent.named(name):
        if best is None or state.ts_ms > best.ts_ms:
            best = state
    return best


def _value(agent: AgentView, name: str) -> float | None:
    state = _latest(agent, name)
    if state is None or math.isnan(state.value):
        return None
    return state.value


def _flag(agent: AgentView, name: str) -> bool | None:
    value = _value(agent, name)
    return None if value is None else value >= 0.5


_remembered: dict[int, Health] | None = None


@contextmanager
def remembered() -> Iterator[None]:
    """Within this block ``read_health`` reads each position once (the rules and the fleet
    correlator each ask for it); the views must not change inside it."""
    global _remembered
    outer, _remembered = _remembered, {}
    try:
        yield
    finally:
        _remembered = outer


def read_health(agent: AgentView) -> Health:
    if _remembered is not None:
        known = _remembered.get(id(agent))
        if known is None:
            known = _remembered[id(agent)] = _read_health(agent)
        return known
    return _read_health(agent)


def _read_health(agent: AgentView) -> Health:
    layers: dict[str, str] = {}
    for state in agent.named("lifeline_layer_state"):
        layer = state.labels.get("layer", "")
        if layer and not math.isnan(state.value):
            layers[layer] = STATE_NAMES.get(int(state.value), "unknown")
    verdict_layer, verdict, cause = "none", "healthy", "none"
    # The agent sends only its current verdict; older label sets stay in the store with older
    # timestamps, so the newest one is the verdict now.
    latest = None
    for state in agent.named("lifeline_verdict_info"):
        if state.value == 1 and (latest is None or state.ts_ms > latest.ts_ms):
            latest = state
    if latest is not None:
        verdict_layer = latest.labels.get("layer", "none") or "none"
        verdict = latest.labels.get("verdict", "") or FAILED_TEXT.get(verdict_layer, "healthy")
        # An agent that does not send the cause (older than the field) is read as "unknown": generic
        # for its layer, never guessed from its sentence.
        cause = cause_of(latest.labels.get("cause"))
    return Health(
        layers=layers,
        verdict_layer=verdict_layer,
        verdict=verdict,
        verdict_cause=cause,
        risk=_value(agent, "lifeline_cad_risk_ratio"),
        time_to_loss=_value(agent, "lifeline_cad_time_to_loss_seconds"),
        failover_ready=_flag(agent, "lifeline_failover_ready"),
        on_backup=_flag(agent, "lifeline_on_backup"),
        battery_ratio=_value(agent, "lifeline_battery_ratio"),
        battery_left=_value(agent, "lifeline_battery_time_left_seconds"),
    )


def _probes(agent: AgentView, name: str, layer: str) -> Iterator[SeriesState]:
    for state in agent.named(name):
        if series_layer(state.labels) == layer and not math.isnan(state.value):
            yield state


def dependency_of(labels: Mapping[str, str]) -> str:
    """What a probe target stands for across positions: its host if the agent says, else its name."""
    return labels.get("host") or labels.get("target", "")


def failing_dependencies(agent: AgentView, layer: str) -> list[str]:
    """The targets of ``layer`` whose last probe round failed (all of them if none is reported)."""
    states = list(_probes(agent, "lifeline_probe_success", layer))
    failing = sorted({dependency_of(s.labels) for s in states if s.value == 0} - {""})
    return failing or sorted({dependency_of(s.labels) for s in states} - {""})


def figure(agent: AgentView, layer: str, cause: str) -> str:
    """The measured number behind a degraded verdict, chosen by its cause: "RTT 320 ms" for slow
    round trips or answers, "jitter 45 ms", "MOS 3.1"; otherwise (loss, and any cause without a
    figure of its own, "unknown" included) the layer's loss when it loses some: "loss 18 %"; or ""."""
    if cause in ("latency", "slow_answer"):
        rtts = [
            s.value
            for s in _probes(agent, "lifeline_probe_rtt_seconds", layer)
            if s.labels.get("stat") == "avg"
        ]
        if rtts:
            return f"RTT {max(rtts) * 1000:.0f} ms"
    if cause == "jitter":
        jitters = [s.value for s in _probes(agent, "lifeline_probe_jitter_seconds", layer)]
        if jitters:
            return f"jitter {max(jitters) * 1000:.0f} ms"
    if cause == "voice":
        scores = [s.value for s in _probes(agent, "lifeline_probe_mos", layer)]
        if scores:
            return f"MOS {min(scores):.1f}"
    losses = [s.value for s in _probes(agent, "lifeline_probe_loss_ratio", layer)]
    if losses and max(losses) >= 0.005 and max(losses) < 1:
        return f"loss {pct(max(losses))}"
    return ""


def cause_text(agent: AgentView, health: Health) -> str:
    """The verdict with its figure: "VPN tunnel losing packets (loss 18 %)"."""
    if health.verdict_layer == "none":
        # No layer judged broken yet: the agent's verdict says what its trend saw, if it says so.
        return health.verdict if health.verdict_cause == "trend" else "connection quality falling"
    number = figure(agent, health.verdict_layer, health.verdict_cause)
    return f"{health.verdict} ({number})" if number else health.verdict


def seconds_text(seconds: float) -> str:
    if seconds < 100:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def battery_text(health: Health) -> str:
    parts: list[str] = []
    if health.battery_ratio is not None:
        parts.append(f"battery {health.battery_ratio * 100:.0f} %")
    if health.battery_left is not None and math.isfinite(health.battery_left):
        parts.append(f"{seconds_text(health.battery_left)} left")
    return f" ({', '.join(parts)})" if parts else ""
