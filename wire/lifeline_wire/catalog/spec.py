"""How one metric is declared: name, type, help and the labels it may carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Labels the collector adds to every series it re-exposes from an agent.
AGENT_LABELS = ("agent", "site")

MetricType = Literal["gauge", "counter", "info"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    # Label values must come from a closed set (documented cardinality); None = free but bounded by config.
    unit: str = ""
    # True for the few gauges where NaN or ±Inf means something (+Inf: "never", "stable"); every
    # other value must be finite, and the collector rejects a non-finite one naming the field.
    non_finite: bool = False
