"""Metrics about the agent itself: build, providers, spool and delivery."""

from lifeline_wire.catalog.spec import MetricSpec

METRICS = (
    MetricSpec(
        "lifeline_agent_info", "info", "Agent version and position (value 1)", ("version", "position")
    ),
    MetricSpec("lifeline_agent_spool_batches", "gauge", "Batches in the spool waiting for the collector", ()),
    MetricSpec("lifeline_agent_spool_bytes", "gauge", "Encoded size of the batches in the spool", ()),
    MetricSpec(
        "lifeline_agent_spool_dropped_batches_total",
        "counter",
        "Batches dropped from the spool because it reached its size or age bound "
        "(spool.max_bytes, spool.max_age)",
        (),
    ),
    MetricSpec(
        "lifeline_agent_spool_unreadable_batches",
        "gauge",
        "Batches set aside since the agent started because it cannot decode them any more (kept in "
        "the spool file's unreadable table, not sent)",
        (),
    ),
    MetricSpec(
        "lifeline_agent_batches_sent_total",
        "counter",
        "Batches the collector acknowledged (accepted or duplicate) since the agent started",
        (),
    ),
    MetricSpec(
        "lifeline_agent_batches_rejected_total",
        "counter",
        "Batches the collector refused for good (deleted from the spool) since the agent started",
        (),
    ),
    MetricSpec(
        "lifeline_agent_send_failures_total",
        "counter",
        "Failed delivery attempts (reason = network, tls, throttled, server, auth, invalid, too_large, "
        "bad_response)",
        ("reason",),
    ),
    MetricSpec(
        "lifeline_agent_delivery_path_info",
        "info",
        "Delivery paths to the collector: 1 for the one in use, 0 for the others (endpoint = configured "
        "URL, path = default | backup)",
        ("endpoint", "path"),
    ),
    MetricSpec(
        "lifeline_agent_probe_errors_total",
        "counter",
        "Probe rounds that raised (a bug; the round counts as failed and the agent carries on)",
        (),
    ),
)
