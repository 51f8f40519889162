"""Metrics of local sources: links, VPN, Wi-Fi, cellular, power, CAD sessions."""

from lifeline_wire.catalog.spec import MetricSpec

METRICS: tuple[MetricSpec, ...] = (
    # interfaces (psutil, netlink)
    MetricSpec(
        "lifeline_interface_up", "gauge", "1 if the interface has carrier and is up", ("interface", "path")
    ),
    MetricSpec(
        "lifeline_interface_carrier_changes_total",
        "counter",
        "Carrier changes seen since the agent started",
        ("interface", "path"),
    ),
    MetricSpec(
        "lifeline_interface_errors_total",
        "counter",
        "Receive and transmit errors (direction = rx, tx)",
        ("interface", "path", "direction"),
    ),
    MetricSpec(
        "lifeline_interface_drops_total",
        "counter",
        "Receive and transmit drops (direction = rx, tx)",
        ("interface", "path", "direction"),
    ),
    MetricSpec(
        "lifeline_interface_bytes_total",
        "counter",
        "Bytes through the interface (direction = rx, tx)",
        ("interface", "path", "direction"),
    ),
    # VPN
    MetricSpec(
        "lifeline_vpn_up",
        "gauge",
        "1 if the VPN tunnel carries traffic (in-tunnel probes succeed)",
        ("interface", "vpn_type"),
    ),
    MetricSpec(
        "lifeline_vpn_interface_up",
        "gauge",
        "1 if the tunnel interface is up and its VPN stack says connected "
        "(WireGuard handshake within the critical age, OpenVPN CONNECTED); from local state, not probes",
        ("interface", "vpn_type"),
    ),
    MetricSpec(
        "lifeline_vpn_handshake_age_seconds",
        "gauge",
        "Seconds since the last WireGuard handshake (+Inf if never)",
        ("interface", "vpn_type"),
        non_finite=True,
    ),
    MetricSpec(
        "lifeline_vpn_bytes_total",
        "counter",
        "Bytes through the tunnel (direction = rx, tx)",
        ("interface", "vpn_type", "direction"),
    ),
    MetricSpec(
        "lifeline_vpn_misrouted", "gauge", "1 if a CAD address is routed outside the tunnel", ("target",)
    ),
    MetricSpec(
        "lifeline_vpn_split_dns_ok",
        "gauge",
        "1 if CAD names resolve through the agency resolver",
        ("target",),
    ),
    # backup path
    MetricSpec(
        "lifeline_failover_ready", "gauge", "1 if the backup path reaches the VPN concentrator now", ()
    ),
    MetricSpec("lifeline_on_backup", "gauge", "1 if traffic to CAD currently runs over the backup path", ()),
    MetricSpec(
        "lifeline_backup_bytes_total",
        "counter",
        "Bytes sent and received over the backup interface (data caps)",
        ("interface", "direction"),
    ),
    # radio and power
    MetricSpec(
        "lifeline_wifi_signal_dbm", "gauge", "Wi-Fi signal of the associated access point", ("interface",)
    ),
    MetricSpec(
        "lifeline_wifi_bitrate_bytes_per_second",
        "gauge",
        "Wi-Fi transmit bitrate in bytes per second (the PHY rate in bit/s divided by 8)",
        ("interface",),
    ),
    MetricSpec("lifeline_wifi_retries_total", "counter", "Wi-Fi transmit retries", ("interface",)),
    MetricSpec(
        "lifeline_cellular_signal_quality_ratio",
        "gauge",
        "Modem signal quality (0..1)",
        ("modem", "access_technology"),
    ),
    MetricSpec("lifeline_cellular_connected", "gauge", "1 if the modem has a data connection", ("modem",)),
    MetricSpec("lifeline_cellular_rsrp_dbm", "gauge", "LTE/5G reference signal received power", ("modem",)),
    MetricSpec("lifeline_cellular_rsrq_db", "gauge", "LTE/5G reference signal received quality", ("modem",)),
    MetricSpec(
        "lifeline_cellular_sinr_db", "gauge", "LTE/5G signal to interference and noise ratio", ("modem",)
    ),
    MetricSpec("lifeline_power_on_ac", "gauge", "1 if mains power is present", ()),
    MetricSpec("lifeline_battery_ratio", "gauge", "Battery charge (0..1)", ()),
    MetricSpec(
        "lifeline_battery_time_left_seconds", "gauge", "Estimated battery time left (absent when on AC)", ()
    ),
    # the real CAD session, from TCP_INFO (no payload is read)
    MetricSpec(
        "lifeline_cad_session_up", "gauge", "Established TCP sessions to the CAD endpoint", ("target",)
    ),
    MetricSpec(
        "lifeline_cad_session_rtt_seconds", "gauge", "Kernel smoothed RTT of the CAD session", ("target",)
    ),
    MetricSpec(
        "lifeline_cad_session_retransmits_total",
        "counter",
        "Total retransmitted segments of CAD sessions",
        ("target",),
    ),
    MetricSpec(
        "lifeline_cad_session_unacked_segments",
        "gauge",
        "Unacknowledged segments in flight on CAD sessions",
        ("target",),
    ),
)
