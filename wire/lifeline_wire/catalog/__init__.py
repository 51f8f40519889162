"""The metric catalog: every series an agent may send and the collector may expose.

Each area declares its metrics beside the code that emits them, in its own module here (so the
collector can validate and expose them without importing the agent). The union below is the one
list that validation, exposition and the dashboard tests read.
"""

from __future__ import annotations

from lifeline_wire.catalog import agent_self, collector, health, probes, sources
from lifeline_wire.catalog.spec import AGENT_LABELS, MetricSpec

CATALOG: dict[str, MetricSpec] = {}
for _module in (probes, sources, health, agent_self, collector):
    for _spec in _module.METRICS:
        if _spec.name in CATALOG:  # pragma: no cover - caught by the catalog test
            raise RuntimeError(f"metric {_spec.name} declared twice")
        CATALOG[_spec.name] = _spec

__all__ = ["AGENT_LABELS", "CATALOG", "MetricSpec"]
