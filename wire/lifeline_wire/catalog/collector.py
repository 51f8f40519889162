"""Metrics the collector exposes about the fleet and itself (not sent by agents)."""

from lifeline_wire.catalog.spec import MetricSpec

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "lifeline_agent_up",
        "gauge",
        "1 if the agent reported within the silence window, 0 if silent",
        ("agent", "site"),
    ),
    MetricSpec(
        "lifeline_agent_last_seen_timestamp_seconds",
        "gauge",
        "When the collector last heard from the agent",
        ("agent", "site"),
    ),
    MetricSpec(
        "lifeline_agent_clock_offset_seconds",
        "gauge",
        "Agent clock minus collector clock at the last request",
        ("agent", "site"),
    ),
    MetricSpec(
        "lifeline_agent_sequence_gaps_total",
        "counter",
        "Batches missing from an agent's sequence (lost before reaching the collector)",
        ("agent", "site"),
    ),
    MetricSpec(
        "lifeline_agent_sequence_missing_batches",
        "gauge",
        "Batches of an agent's current and past boots not received yet (falls when late batches arrive)",
        ("agent", "site"),
    ),
    MetricSpec(
        "lifeline_ingest_batches_total",
        "counter",
        "Batches answered by the ingest API (result = accepted, duplicate, rejected)",
        ("result",),
    ),
    MetricSpec("lifeline_ingest_requests_total", "counter", "Ingest requests by HTTP status code", ("code",)),
    MetricSpec(
        "lifeline_collector_heartbeats_total",
        "counter",
        "Heartbeat datagrams received, by result (ok, malformed, unknown_agent, bad_mac, stale, replay,"
        " rate_limited)",
        ("result",),
    ),
    MetricSpec(
        "lifeline_collector_heartbeat_paths_total",
        "counter",
        "Valid heartbeats by the path they took (tunnel, backup, public)",
        ("path",),
    ),
    MetricSpec(
        "lifeline_collector_rejected_total",
        "counter",
        "Requests and batches of an agent refused, by agent and reason: the contract (schema, non_finite,"
        " unsafe_text, too_deep, catalog, wrong_agent), a [limits] key (series_limit, events,"
        " event_attributes), the server's bounds (too_large, slow_body) or a request the store could not"
        " take (unstorable)",
        ("agent", "reason"),
    ),
    MetricSpec(
        "lifeline_collector_rule_errors_total",
        "counter",
        "Evaluations of an alert rule for one position that raised: that rule was skipped for that position"
        " (its alerts kept as they were), every other rule and position evaluated",
        ("rule",),
    ),
    MetricSpec(
        "lifeline_alerts_active",
        "gauge",
        "Alerts currently active by name, site and state (pending, firing)",
        ("alertname", "site", "state"),
    ),
    MetricSpec(
        "lifeline_alert_acknowledgements_total",
        "counter",
        "Alert instances acknowledged (the first acknowledgement of each), by alert name and site",
        ("alertname", "site"),
    ),
    MetricSpec(
        "lifeline_alert_acknowledge_seconds_total",
        "counter",
        "Sum of the seconds from firing to the first acknowledgement, by alert name and site (divide its "
        "increase by that of lifeline_alert_acknowledgements_total for the mean time to acknowledge)",
        ("alertname", "site"),
    ),
    MetricSpec("lifeline_silences_active", "gauge", "Silences in force now (started and not expired)"),
    MetricSpec(
        "lifeline_notifications_total",
        "counter",
        "Notifications sent by notifier and result (ok, retry, failed)",
        ("notifier", "result"),
    ),
    MetricSpec(
        "lifeline_remote_write_samples_total",
        "counter",
        "Samples handled by remote-write (result = sent, failed: rejected by the receiver or given up, "
        "dropped: queue overflow or shutdown; failed and dropped samples remain in the store)",
        ("result",),
    ),
    MetricSpec(
        "lifeline_remote_write_retries_total",
        "counter",
        "Remote-write requests repeated after a 429, a 5xx or an unreachable receiver",
    ),
    MetricSpec(
        "lifeline_remote_write_queue_samples",
        "gauge",
        "Samples held in memory waiting to be remote-written (queued and in flight)",
    ),
)
