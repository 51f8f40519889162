"""Metrics of the health model: per-layer state, verdict, risk (issues 4 and 6 grow this)."""

from lifeline_wire.catalog.spec import MetricSpec

METRICS: tuple[MetricSpec, ...] = ()
