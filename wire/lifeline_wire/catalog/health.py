"""Metrics of the health model: per-layer state, the verdict, risk of losing CAD."""

from lifeline_wire.catalog.spec import MetricSpec

STATES = {"ok": 0, "degraded": 1, "failed": 2, "unknown": 3}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "lifeline_layer_state",
        "gauge",
        "State of one layer: 0 ok, 1 degraded, 2 failed, 3 unknown",
        ("layer",),
    ),
    MetricSpec(
        "lifeline_verdict_info",
        "info",
        "The first broken layer, what is wrong with it (cause) and the verdict in words (value 1; "
        "layer = none when healthy)",
        ("layer", "cause", "verdict"),
    ),
    MetricSpec(
        "lifeline_cad_risk_ratio",
        "gauge",
        "Estimated probability (0..1) that the position loses CAD soon",
        (),
        non_finite=True,
    ),
    MetricSpec(
        "lifeline_cad_time_to_loss_seconds",
        "gauge",
        "Predicted seconds until CAD is lost (+Inf when stable)",
        (),
        non_finite=True,
    ),
    MetricSpec(
        "lifeline_provider_available",
        "gauge",
        "1 if a data provider works on this machine, 0 if it lacks privileges or hardware",
        ("provider",),
    ),
)
