"""Metrics about the agent itself: build, providers, spool and delivery."""

from lifeline_wire.catalog.spec import MetricSpec

METRICS = (
    MetricSpec(
        "lifeline_agent_info", "info", "Agent version and position (value 1)", ("version", "position")
    ),
)
