"""Metrics of the probes (icmp, tcp, dns): one series per configured or discovered target."""

from lifeline_wire.catalog.spec import MetricSpec

TARGET_LABELS = ("target", "role", "path", "kind")

METRICS = (
    MetricSpec(
        "lifeline_probe_success",
        "gauge",
        "1 if the last probe round reached the target, else 0",
        TARGET_LABELS,
    ),
    MetricSpec(
        "lifeline_probe_duration_seconds", "gauge", "Wall time of the last probe round", TARGET_LABELS
    ),
    MetricSpec(
        "lifeline_probe_rtt_seconds",
        "gauge",
        "Round-trip time of the last round (stat = min, avg, max); for tcp the connect time",
        (*TARGET_LABELS, "stat"),
    ),
    MetricSpec(
        "lifeline_probe_jitter_seconds", "gauge", "RFC 3550 interarrival jitter estimate", TARGET_LABELS
    ),
    MetricSpec(
        "lifeline_probe_loss_ratio", "gauge", "Share of echoes lost in the last round (0..1)", TARGET_LABELS
    ),
    MetricSpec(
        "lifeline_probe_packets_sent_total",
        "counter",
        "Echoes or connects attempted since the agent started",
        TARGET_LABELS,
    ),
    MetricSpec(
        "lifeline_probe_packets_received_total",
        "counter",
        "Echo replies or connects completed since the agent started",
        TARGET_LABELS,
    ),
    MetricSpec(
        "lifeline_probe_consecutive_failures",
        "gauge",
        "Probe rounds failed in a row (0 after a success)",
        TARGET_LABELS,
    ),
    MetricSpec(
        "lifeline_probe_mos",
        "gauge",
        "Voice quality estimate (simplified E-model, 1..4.5) from RTT, jitter and loss",
        TARGET_LABELS,
    ),
)
