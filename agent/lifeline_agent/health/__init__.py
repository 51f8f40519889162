"""The agent's health model: per-layer state, verdict, risk and time to loss.

Pure decision logic over probe results and local facts with an injected clock; the scheduler feeds
it and ships what it says. See :mod:`lifeline_agent.health.model` for the API.
"""

from __future__ import annotations

from lifeline_agent.health.assessment import Assessment, LayerStatus, PathScore, ProbeOutcome
from lifeline_agent.health.facts import RouteFacts, VpnFacts
from lifeline_agent.health.layers import Tuning, target_layer
from lifeline_agent.health.model import HealthModel
from lifeline_agent.health.render import local_warning, render_status
from lifeline_agent.sources.cellular import CellularFacts
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.wifi import WifiFacts

__all__ = [
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
    "local_warning",
    "render_status",
    "target_layer",
]
