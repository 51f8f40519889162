"""Metrics of local sources: links, VPN, Wi-Fi, cellular, power, CAD sessions (issue 4 grows this)."""

from lifeline_wire.catalog.spec import MetricSpec

METRICS: tuple[MetricSpec, ...] = ()
