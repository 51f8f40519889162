"""The agent's TOML config, validated once at start into frozen dataclasses.

Every problem is reported together with its dotted key path; unknown keys are errors. The
threshold defaults follow public guidance (ITU-T G.114 and G.107, WireGuard's key lifetime, LTE
vendor bands; docs/configuration.md) and every one can be overridden per site.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifeline_wire.tomlcfg import ConfigError, Section, build, load_toml

ROLES = ("link", "router", "internet", "vpn", "dns", "cad")
PATHS = ("auto", "primary", "backup", "tunnel")
PROBE_KINDS = ("icmp", "tcp", "dns")
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
DEFAULT_STATE_DIR = "/var/lib/lifeline-agent"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
DEFAULT_SPOOL_BYTES = 200_000_000
DEFAULT_SPOOL_AGE = 7 * 86400.0

__all__ = [
    "PATHS",
    "ROLES",
    "AgentConfig",
    "AgentSection",
    "CollectorEndpoint",
    "CollectorSection",
    "ConfigError",
    "DiscoverySection",
    "MetricsSection",
    "ProvidersSection",
    "SpoolSection",
    "Target",
    "Thresholds",
    "load",
    "parse",
]


@dataclass(frozen=True, slots=True)
class AgentSection:
    id: str
    site: str = ""
    position: str = ""
    token: str = field(default="", repr=False)
    token_file: str = ""
    state_dir: str = DEFAULT_STATE_DIR
    log_level: str = "info"
    log_format: str = "text"

    def read_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            return Path(self.token_file).read_text(encoding="utf-8").strip()
        return os.environ.get("LIFELINE_AGENT_TOKEN", "")


@dataclass(frozen=True, slots=True)
class MetricsSection:
    listen: str = DEFAULT_METRICS_LISTEN  # the agent's own /metrics; "" turns it off
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ScheduleSection:
    batch_interval: float = 5.0
    default_interval: float = 1.0
    evaluate_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class DiscoverySection:
    default_gateways: bool = True  # probe every default gateway as role "router"
    vpn_interfaces: bool = True


@dataclass(frozen=True, slots=True)
class CollectorEndpoint:
    url: str
    # An endpoint reached outside the VPN (public internet). Agencies must approve this data flow,
    # so it is only used when [collector].allow_public is true.
    public: bool = False
    # Also try this endpoint bound to the backup interface when the primary path fails.
    via_backup: bool = True


@dataclass(frozen=True, slots=True)
class CollectorSection:
    endpoints: tuple[CollectorEndpoint, ...] = ()
    allow_public: bool = False
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    timeout: float = 5.0
    backup_interface: str = ""  # "" = discover (the default route with the higher metric)
    max_batches_per_request: int = 50


@dataclass(frozen=True, slots=True)
class HeartbeatSection:
    """The UDP heartbeat that lets the collector notice within seconds that no path is left."""

    enabled: bool = True
    interval: float | None = None  # None: as the collector says (its [heartbeat] interval, 250 ms)
    copies: int = 1  # datagrams per beat and path (each its own counter), sent back to back
    # Paths other than the primary one beat this often while the primary path works (a hotspot
    # is often metered), and every interval once the health model says home or tunnel is down.
    fallback_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class SpoolSection:
    path: str = ""  # "" = <state_dir>/spool.db
    max_bytes: int = DEFAULT_SPOOL_BYTES
    max_age: float = DEFAULT_SPOOL_AGE


@dataclass(frozen=True, slots=True)
class ProvidersSection:
    """Which local sources to read; ``fixture`` replays recorded data (the lab, tests)."""

    wifi: str = "auto"  # auto | nl80211 | proc | fixture | off
    cellular: str = "auto"  # auto | modemmanager | mmcli | fixture | off
    power: str = "auto"  # auto | psutil | fixture | off
    fixture_file: str = ""  # JSON lines of fixture values (lab scenarios write this)
    cad_sessions: bool = True  # read TCP_INFO of established connections to CAD targets
    netlink: bool = True
    traceroute: bool = True
    desktop_notify: bool = True


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Degraded / critical bands of the health model; overridable per site in [thresholds]."""

    rtt_degraded: float = 0.150
    rtt_critical: float = 0.300
    rtt_hold: float = 60.0
    jitter_degraded: float = 0.030
    jitter_critical: float = 0.040
    loss_degraded: float = 0.01
    loss_critical: float = 0.03
    loss_window: float = 60.0
    mos_degraded: float = 4.0
    mos_critical: float = 3.6
    lost_probes_degraded: int = 3
    lost_probes_critical: int = 10
    handshake_degraded: float = 150.0
    handshake_critical: float = 180.0
    rsrp_degraded: float = -100.0
    rsrp_critical: float = -110.0
    rsrq_degraded: float = -15.0
    rsrq_critical: float = -20.0
    sinr_degraded: float = 10.0
    sinr_critical: float = 0.0
    wifi_rssi_degraded: float = -67.0
    wifi_rssi_critical: float = -75.0
    battery_critical_percent: float = 20.0
    battery_critical_seconds: float = 15 * 60.0
    tcp_connect_degraded: float = 0.5
    tcp_connect_critical: float = 3.0
    tcp_failures_critical: int = 3


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    role: str
    kind: str
    host: str
    interval: float = 1.0
    timeout: float = 1.0
    path: str = "auto"
    port: int = 0  # tcp
    count: int = 1  # icmp: echoes per round
    spacing: float = 0.02  # icmp: gap between echoes in one round
    interface: str = ""  # bind to this interface (SO_BINDTODEVICE)
    query: str = ""  # dns: the name to resolve
    expect: str = ""  # dns: an address the answer must contain
    discovered: bool = False


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent: AgentSection
    targets: tuple[Target, ...] = ()
    collector: CollectorSection = CollectorSection()
    heartbeat: HeartbeatSection = HeartbeatSection()
    spool: SpoolSection = SpoolSection()
    metrics: MetricsSection = MetricsSection()
    schedule: ScheduleSection = ScheduleSection()
    discovery: DiscoverySection = DiscoverySection()
    providers: ProvidersSection = ProvidersSection()
    thresholds: Thresholds = Thresholds()
    source: str = ""

    @property
    def spool_path(self) -> str:
        return self.spool.path or os.path.join(self.agent.state_dir, "spool.db")

    def cad_targets(self) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if t.role == "cad")


def _agent(sec: Section) -> AgentSection:
    out = AgentSection(
        id=sec.text("id", required=True, pattern=ID_PATTERN),
        site=sec.text("site"),
        position=sec.text("position"),
        token=sec.text("token"),
        token_file=sec.text("token_file"),
        state_dir=sec.text("state_dir", DEFAULT_STATE_DIR),
        log_level=sec.choice("log_level", "info", ("debug", "info", "warning", "error")),
        log_format=sec.choice("log_format", "text", ("text", "json")),
    )
    if out.token and out.token_file:
        sec.error("token", "set either token or token_file, not both")
    sec.finish()
    return out


def _target(sec: Section, default_interval: float) -> Target:
    kind = sec.choice("kind", "icmp", PROBE_KINDS)
    target = Target(
        name=sec.text("name", required=True, pattern=ID_PATTERN),
        role=sec.choice("role", "cad", ROLES) if sec.has("role") else _required_role(sec),
        kind=kind,
        host=sec.text("host", required=kind != "dns"),
        interval=sec.duration("interval", default_interval, min=0.1, max=3600.0),
        timeout=sec.duration("timeout", 1.0, min=0.01, max=30.0),
        path=sec.choice("path", "auto", PATHS),
        port=sec.integer("port", 0, min=0, max=65535),
        count=sec.integer("count", 1, min=1, max=100),
        spacing=sec.duration("spacing", 0.02, min=0.001, max=5.0),
        interface=sec.text("interface"),
        query=sec.text("query"),
        expect=sec.text("expect"),
    )
    if kind == "tcp" and target.port == 0:
        sec.error("port", 'is required for kind = "tcp"')
    if kind == "dns" and not target.query:
        sec.error("query", 'is required for kind = "dns"')
    if target.count > 1 and target.spacing * target.count + target.timeout > target.interval:
        sec.error(
            "count",
            f"{target.count} echoes {target.spacing:g}s apart plus a {target.timeout:g}s timeout "
            f"do not fit in the {target.interval:g}s interval",
        )
    sec.finish()
    return target


def _required_role(sec: Section) -> str:
    sec.error("role", f"is required (one of {', '.join(ROLES)})")
    return "cad"


def _collector(sec: Section) -> CollectorSection:
    endpoints: list[CollectorEndpoint] = []
    for ep in sec.tables("endpoints"):
        url = ep.text("url", required=True)
        if url and not url.startswith(("http://", "https://")):
            ep.error("url", f"must start with http:// or https:// (got {url!r})")
        endpoints.append(
            CollectorEndpoint(
                url=url.rstrip("/"), public=ep.flag("public", False), via_backup=ep.flag("via_backup", True)
            )
        )
        ep.finish()
    out = CollectorSection(
        endpoints=tuple(endpoints),
        allow_public=sec.flag("allow_public", False),
        ca_file=sec.text("ca_file"),
        client_cert=sec.text("client_cert"),
        client_key=sec.text("client_key"),
        timeout=sec.duration("timeout", 5.0, min=0.1, max=120.0),
        backup_interface=sec.text("backup_interface"),
        max_batches_per_request=sec.integer("max_batches_per_request", 50, min=1, max=500),
    )
    if bool(out.client_cert) != bool(out.client_key):
        sec.error("client_cert", "client_cert and client_key must be set together")
    sec.finish()
    return out


def _heartbeat(sec: Section) -> HeartbeatSection:
    interval = sec.duration("interval", 0.25, min=0.05, max=10.0) if sec.has("interval") else None
    out = HeartbeatSection(
        enabled=sec.flag("enabled", True),
        interval=interval,
        copies=sec.integer("copies", 1, min=1, max=5),
        fallback_interval=sec.duration("fallback_interval", 1.0, min=0.05, max=60.0),
    )
    if interval is not None and out.fallback_interval < interval:
        sec.error("fallback_interval", f"must not be shorter than interval ({interval:g}s)")
    sec.finish()
    return out


def _thresholds(sec: Section) -> Thresholds:
    defaults = Thresholds()
    values: dict[str, Any] = {}
    for name in Thresholds.__dataclass_fields__:
        default = getattr(defaults, name)
        if isinstance(default, int) and not isinstance(default, bool):
            values[name] = sec.integer(name, default, min=1)
        elif (
            name.startswith(("rtt_", "jitter_", "handshake_", "tcp_connect_", "loss_window"))
            or name.endswith("_seconds")
            or name == "rtt_hold"
        ):
            values[name] = sec.duration(name, default, min=0.0)
        else:
            values[name] = sec.number(name, default)
    out = Thresholds(**values)
    for low, high in (
        ("rtt_degraded", "rtt_critical"),
        ("jitter_degraded", "jitter_critical"),
        ("loss_degraded", "loss_critical"),
        ("handshake_degraded", "handshake_critical"),
    ):
        if getattr(out, low) > getattr(out, high):
            sec.error(low, f"must not exceed {high} ({getattr(out, low):g} > {getattr(out, high):g})")
    sec.finish()
    return out


def _read(root: Section) -> AgentConfig:
    agent = _agent(root.table("agent"))
    sched_sec = root.table("schedule")
    schedule = ScheduleSection(
        batch_interval=sched_sec.duration("batch_interval", 5.0, min=0.5, max=300.0),
        default_interval=sched_sec.duration("default_interval", 1.0, min=0.1, max=3600.0),
        evaluate_interval=sched_sec.duration("evaluate_interval", 1.0, min=0.1, max=60.0),
    )
    sched_sec.finish()
    targets = tuple(_target(t, schedule.default_interval) for t in root.tables("targets"))
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            root.problems.add(
                f"targets[{index}].name",
                f"duplicate name {target.name!r} (also targets[{seen[target.name]}])",
            )
        seen.setdefault(target.name, index)
    metrics_sec = root.table("metrics")
    metrics = MetricsSection(
        listen=metrics_sec.text("listen", DEFAULT_METRICS_LISTEN), enabled=metrics_sec.flag("enabled", True)
    )
    if metrics.listen and ":" not in metrics.listen:
        metrics_sec.error("listen", f"must be host:port (got {metrics.listen!r})")
    metrics_sec.finish()
    disc_sec = root.table("discovery")
    discovery = DiscoverySection(
        default_gateways=disc_sec.flag("default_gateways", True),
        vpn_interfaces=disc_sec.flag("vpn_interfaces", True),
    )
    disc_sec.finish()
    spool_sec = root.table("spool")
    spool = SpoolSection(
        path=spool_sec.text("path"),
        max_bytes=spool_sec.size("max_bytes", DEFAULT_SPOOL_BYTES, min=100_000),
        max_age=spool_sec.duration("max_age", DEFAULT_SPOOL_AGE, min=60.0),
    )
    spool_sec.finish()
    prov = root.table("providers")
    providers = ProvidersSection(
        wifi=prov.choice("wifi", "auto", ("auto", "nl80211", "proc", "fixture", "off")),
        cellular=prov.choice("cellular", "auto", ("auto", "modemmanager", "mmcli", "fixture", "off")),
        power=prov.choice("power", "auto", ("auto", "psutil", "fixture", "off")),
        fixture_file=prov.text("fixture_file"),
        cad_sessions=prov.flag("cad_sessions", True),
        netlink=prov.flag("netlink", True),
        traceroute=prov.flag("traceroute", True),
        desktop_notify=prov.flag("desktop_notify", True),
    )
    if "fixture" in (providers.wifi, providers.cellular, providers.power) and not providers.fixture_file:
        prov.error("fixture_file", 'is required when a provider is "fixture"')
    prov.finish()
    collector = _collector(root.table("collector"))
    heartbeat = _heartbeat(root.table("heartbeat"))
    public = [i for i, ep in enumerate(collector.endpoints) if ep.public]
    if public and not collector.allow_public:
        root.problems.add(
            f"collector.endpoints[{public[0]}].public",
            "a public endpoint reports outside the VPN; "
            "set collector.allow_public = true once the agency approves",
        )
    return AgentConfig(
        agent=agent,
        targets=targets,
        collector=collector,
        heartbeat=heartbeat,
        spool=spool,
        metrics=metrics,
        schedule=schedule,
        discovery=discovery,
        providers=providers,
        thresholds=_thresholds(root.table("thresholds")),
    )


def parse(data: dict[str, Any], source: str = "<config>") -> AgentConfig:
    config = build(source, data, _read)
    return AgentConfig(
        **{**{f: getattr(config, f) for f in AgentConfig.__dataclass_fields__}, "source": source}
    )


def load(path: str | Path) -> AgentConfig:
    return parse(load_toml(path), str(path))
