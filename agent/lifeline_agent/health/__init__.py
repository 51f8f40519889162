"""The agent's health model: per-layer state, verdict, risk and time to loss.

Pure decision logic over probe results and local facts with an injected clock; the scheduler feeds
it and ships what it says. See :mod:`lifeline_agent.health.model` for the API.
"""

from __future__ import annotations

from lifeline_agent.health.facts import CellularFacts, PowerFacts, RouteFacts, VpnFacts, WifiFacts
from lifeline_agent.health.layers import CHAIN, LAYERS, Tuning, layer_of
from lifeline_agent.health.model import Assessment, HealthModel, LayerStatus, PathScore, ProbeOutcome
from lifeline_agent.health.render import local_warning, render_status

__all__ = [
    "CHAIN",
    "LAYERS",
    "Assessment",
    "CellularFacts",
    "HealthModel",
    "LayerStatus",
    "PathScore",
    "PowerFacts",
    "ProbeOutcome",
    "RouteFacts",
    "Tuning",
    "VpnFacts",
    "WifiFacts",
    "layer_of",
    "local_warning",
    "render_status",
]
