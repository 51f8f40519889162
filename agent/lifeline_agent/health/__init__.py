"""The agent's health model: per-layer state, verdict, risk and time to loss.

Pure decision logic over probe results and local facts with an injected clock; the scheduler feeds
it and ships what it says. :mod:`~lifeline_agent.health.model` holds the stateful model and its API;
:mod:`~lifeline_agent.health.assessment` the records it returns, :mod:`~lifeline_agent.health.attribution`
the rules that charge a symptom to a layer and name the verdict, :mod:`~lifeline_agent.health.events`
the events and samples that leave the laptop, :mod:`~lifeline_agent.health.render` the words for the
dispatcher.
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
