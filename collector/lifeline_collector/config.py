"""The collector's TOML config, validated once into frozen dataclasses (every error, dotted path)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lifeline_collector.alerting.routing import Route, read_routes
from lifeline_collector.board.settings import BoardConfig, read_board
from lifeline_collector.heartbeat import HeartbeatConfig, read_heartbeat
from lifeline_collector.limits import LimitsSection, read_limits
from lifeline_collector.notify import REGISTRY, NotifierConfig
from lifeline_collector.people.settings import AuthConfig, read_auth
from lifeline_collector.remote_write.config import RemoteWriteConfig, read_remote_write
from lifeline_collector.store.backends import DEFAULT_POOL_SIZE, is_postgres_dsn
from lifeline_collector.token_files import token_file_hash
from lifeline_wire.tomlcfg import ConfigError, Section, build, load_toml

DEFAULT_LISTEN = "127.0.0.1:8480"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8480"
DEFAULT_STORE_PATH = "/var/lib/lifeline-collector/lifeline.db"
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_RETENTION = 30 * 86400.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0

__all__ = [
    "AlertingSection",
    "ApiSection",
    "CollectorConfig",
    "ConfigError",
    "ExpositionSection",
    "LimitsSection",
    "ServerSection",
    "StoreSection",
    "load",
    "parse",
]

_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class ServerSection:
    listen: str = DEFAULT_LISTEN
    max_body_bytes: int = DEFAULT_MAX_BODY
    public_url: str = DEFAULT_PUBLIC_URL
    # Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For / -Proto is believed;
    # empty: no forwarding header is believed, the peer address is the client.
    trusted_proxies: tuple[str, ...] = ()
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # a request's headers must arrive within this
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # … and an ingest body within this

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class StoreSection:
    path: str = DEFAULT_STORE_PATH
    retention: float = DEFAULT_RETENTION  # samples, events and batch ids older than this are pruned
    backend: str = "sqlite"  # or "postgresql" (dsn): several collectors share one database
    dsn: str = ""
    pool_size: int = DEFAULT_POOL_SIZE

    @property
    def location(self) -> str:
        """What ``Store`` opens: the SQLite file, or the PostgreSQL DSN."""
        return self.dsn if self.backend == "postgresql" else self.path


DEFAULT_HOLDS: dict[str, float] = {
    "CadAtRisk": 0.0,
    "PositionLayerFailed": 0.0,  # a hard cut pages on the agent's priority batch
    # The agent holds the backup failed for its fail hold already; a hotspot without internet for a
    # minute is news while it lasts (a 1 min hold never warned during a 60 s outage).
    "FailoverNotReady": 5.0,
    "FleetIncident": 0.0,
}


@dataclass(frozen=True, slots=True)
class AlertingSection:
    cad_failures: int = 4  # failed rounds in a row of a role="cad" target before paging (a 2 s blip fails 3)
    silent_after: float = 15.0  # batch-based silence: agents that never sent this collector a heartbeat
    # No heartbeat over any path this long: silent (agents that speak heartbeats, every 0.25 s).
    heartbeat_silent_after: float = 2.5
    silence_check_interval: float = 0.2  # how often deadlines of silence are checked
    evaluate_interval: float = 1.0
    resend_interval: float = 60.0
    risk_warn: float = 0.5  # lifeline_cad_risk_ratio at which CadAtRisk fires (warning)
    risk_page: float = 0.8  # … at which it pages (critical)
    page_time_to_loss: float = 60.0  # … or when the predicted time to loss is at most this
    fleet_min_positions: int = 3  # positions losing one dependency that make a FleetIncident
    fleet_min_ratio: float = 0.5  # … or this share of a site's positions (at least 2)
    fleet_window: float = 60.0  # … losing it within this long of each other
    # The ``for`` of each rule: how long its condition must hold before it fires.
    holds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_HOLDS))
    # A firing alert resolves only after its condition has been clear this long (Prometheus'
    # keep_firing_for): a link at 60 % loss succeeds now and then, and must not page each time.
    resolve_hold: float = 10.0


@dataclass(frozen=True, slots=True)
class ApiSection:
    """Operator (write) endpoints: silences and acknowledgements."""

    admin_token_file: str = ""
    admin_token_hash: str = field(default="", repr=False)  # SHA-256 of the token; the token is not kept
    lockout_after: int = 5  # failed admin logins from one address …
    lockout_for: float = 600.0  # … lock it out this long (CJIS: 5 attempts, 10 minutes)


@dataclass(frozen=True, slots=True)
class ExpositionSection:
    stale_after: float = 300.0  # an agent silent this long has its series dropped from /metrics


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    server: ServerSection = ServerSection()
    store: StoreSection = StoreSection()
    alerting: AlertingSection = AlertingSection()
    exposition: ExpositionSection = ExpositionSection()
    notifiers: tuple[NotifierConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    api: ApiSection = ApiSection()
    remote_write: RemoteWriteConfig = RemoteWriteConfig()  # noqa: RUF009 - frozen, shared safely
    limits: LimitsSection = LimitsSection()  # noqa: RUF009 - frozen, shared safely
    auth: AuthConfig = AuthConfig()  # noqa: RUF009 - frozen, shared safely
    board: BoardConfig = BoardConfig()  # noqa: RUF009 - frozen, shared safely
    heartbeat: HeartbeatConfig = HeartbeatConfig()  # noqa: RUF009 - frozen, shared safely
    source: str = "(defaults)"


def split_listen(listen: str) -> tuple[str, int]:
    match = _LISTEN_RE.match(listen)
    if match is None:
        raise ValueError(f'must be "host:port" such as "127.0.0.1:8480" (got {listen!r})')
    port = int(match.group("port"))
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535 (got {port})")
    return match.group("v6") or match.group("host"), port


def _server(section: Section) -> ServerSection:
    listen = section.text("listen", DEFAULT_LISTEN)
    try:
        split_listen(listen)
    except ValueError as exc:
        section.error("listen", str(exc))
    max_body = section.size("max_body_bytes", DEFAULT_MAX_BODY, min=1024)
    public_url = section.text("public_url", DEFAULT_PUBLIC_URL)
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", public_url):
        section.error("public_url", f"must be an http:// or https:// URL (got {public_url!r})")
    proxies = section.str_list("trusted_proxies")
    for index, proxy in enumerate(proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            section.problems.add(
                f"{section.key('trusted_proxies')}[{index}]",
                f"must be an IP address or network such as 10.0.0.5 or 10.0.0.0/24 (got {proxy!r})",
            )
    header_timeout = section.duration("header_timeout", DEFAULT_HEADER_TIMEOUT, min=0.5, max=300.0)
    body_timeout = section.duration("body_timeout", DEFAULT_BODY_TIMEOUT, min=1.0, max=3600.0)
    section.finish()
    return ServerSection(
        listen=listen,
        max_body_bytes=max_body,
        public_url=public_url.rstrip("/"),
        trusted_proxies=tuple(proxies),
        header_timeout=header_timeout,
        body_timeout=body_timeout,
    )


def _store(section: Section) -> StoreSection:
    path = section.text("path", DEFAULT_STORE_PATH)
    if section.has("path") and not path:
        section.error("path", "must not be empty")
    retention = section.duration("retention", DEFAULT_RETENTION, min=3600.0)
    backend = section.choice("backend", "sqlite", ("sqlite", "postgresql"))
    dsn = section.text("dsn")
    if backend == "postgresql" and not is_postgres_dsn(dsn):
        section.error("dsn", "must be a postgresql:// URL when backend is postgresql")
    elif backend == "sqlite" and section.has("dsn"):
        section.error("dsn", 'is used only with backend = "postgresql"')
    pool_size = section.integer("pool_size", DEFAULT_POOL_SIZE, min=1, max=200)
    section.finish()
    return StoreSection(path=path, retention=retention, backend=backend, dsn=dsn, pool_size=pool_size)


def _alerting(section: Section) -> AlertingSection:
    cad_failures = section.integer("cad_failures", 4, min=1, max=1000)
    silent_after = section.duration("silent_after", 15.0, min=1.0, max=86400.0)
    # Beats are never judged more slowly than batches: an explicit longer value is an error, the
    # default follows a silent_after set below it.
    heartbeat_silent_after = section.duration(
        "heartbeat_silent_after", min(2.5, silent_after), min=0.5, max=3600.0
    )
    if heartbeat_silent_after > silent_after:
        section.error("heartbeat_silent_after", f"must not be longer than silent_after ({silent_after:g}s)")
    silence_check_interval = section.duration("silence_check_interval", 0.2, min=0.05, max=10.0)
    evaluate_interval = section.duration("evaluate_interval", 1.0, min=0.1, max=60.0)
    resend_interval = section.duration("resend_interval", 60.0, min=1.0, max=86400.0)
    if evaluate_interval > silent_after:
        section.error("evaluate_interval", "must not be longer than silent_after")
    risk_warn = section.number("risk_warn", 0.5, min=0.0, max=1.0)
    risk_page = section.number("risk_page", 0.8, min=0.0, max=1.0)
    if risk_page < risk_warn:
        section.error("risk_page", f"must not be below risk_warn ({risk_warn:g})")
    page_ttl = section.duration("page_time_to_loss", 60.0, min=0.0, max=3600.0)
    fleet_min = section.integer("fleet_min_positions", 3, min=2, max=100_000)
    fleet_ratio = section.number("fleet_min_ratio", 0.5, min=0.0, max=1.0)
    if section.has("fleet_min_ratio") and fleet_ratio == 0:
        section.error("fleet_min_ratio", "must be > 0 (use 1 to rely on fleet_min_positions alone)")
    fleet_window = section.duration("fleet_window", 60.0, min=1.0, max=3600.0)
    resolve_hold = section.duration("resolve_hold", 10.0, min=0.0, max=3600.0)
    holds = dict(DEFAULT_HOLDS)
    hold_table = section.table("for")
    for name in DEFAULT_HOLDS:
        holds[name] = hold_table.duration(name, DEFAULT_HOLDS[name], min=0.0, max=86400.0)
    for name in hold_table.data:
        if name not in DEFAULT_HOLDS:
            hold_table.error(name, f"unknown rule (one of {', '.join(DEFAULT_HOLDS)})")
            hold_table.touch(name)
    hold_table.finish()
    section.finish()
    return AlertingSection(
        cad_failures=cad_failures,
        silent_after=silent_after,
        heartbeat_silent_after=heartbeat_silent_after,
        silence_check_interval=silence_check_interval,
        evaluate_interval=evaluate_interval,
        resend_interval=resend_interval,
        risk_warn=risk_warn,
        risk_page=risk_page,
        page_time_to_loss=page_ttl,
        fleet_min_positions=fleet_min,
        fleet_min_ratio=fleet_ratio,
        fleet_window=fleet_window,
        holds=holds,
        resolve_hold=resolve_hold,
    )


def _api(section: Section) -> ApiSection:
    token_file = section.text("admin_token_file")
    token_hash = token_file_hash(section, "admin_token_file")
    lockout_after = section.integer("lockout_after", 5, min=1, max=1000)
    lockout_for = section.duration("lockout_for", 600.0, min=1.0, max=86400.0)
    section.finish()
    return ApiSection(
        admin_token_file=token_file,
        admin_token_hash=token_hash,
        lockout_after=lockout_after,
        lockout_for=lockout_for,
    )


def _exposition(section: Section) -> ExpositionSection:
    stale_after = section.duration("stale_after", 300.0, min=1.0)
    section.finish()
    return ExpositionSection(stale_after=stale_after)


def _notifiers(root: Section) -> tuple[NotifierConfig, ...]:
    out: list[NotifierConfig] = []
    seen: set[str] = set()
    for section in root.tables("notifiers"):
        kind = section.choice("kind", "", sorted(REGISTRY))
        if not section.has("kind"):
            section.error("kind", f"is required (one of {', '.join(sorted(REGISTRY))})")
        if kind not in REGISTRY:
            section.touch(*section.data)  # unknown kind: its other keys cannot be judged
            continue
        config = REGISTRY[kind].read_config(section)
        section.finish()
        if config.name in seen:
            section.error("name", f"duplicate notifier name {config.name!r}")
        seen.add(config.name)
        out.append(config)
    return tuple(out)


def _root(root: Section) -> CollectorConfig:
    server = _server(root.table("server"))
    store = _store(root.table("store"))
    alerting = _alerting(root.table("alerting"))
    exposition = _exposition(root.table("exposition"))
    if exposition.stale_after < alerting.silent_after:
        root.problems.add("exposition.stale_after", "must not be shorter than alerting.silent_after")
    notifiers = _notifiers(root)
    routes = read_routes(root, [n.name for n in notifiers])
    api = _api(root.table("api"))
    remote_write = read_remote_write(root.table("remote_write"))
    limits = read_limits(root.table("limits"))
    auth = read_auth(root.table("auth"))
    board = read_board(root.table("board"))
    heartbeat = read_heartbeat(root.table("heartbeat"), split_listen, server.listen)
    if remote_write.enabled and not remote_write.cursor_file:
        # Durable by default: a restart resumes from the last sample sent instead of losing the queue.
        remote_write = replace(
            remote_write, cursor_file=str(Path(store.path).with_suffix(".remote_write.cursor"))
        )
    return CollectorConfig(
        server=server,
        store=store,
        alerting=alerting,
        exposition=exposition,
        notifiers=notifiers,
        routes=routes,
        api=api,
        remote_write=remote_write,
        limits=limits,
        auth=auth,
        board=board,
        heartbeat=heartbeat,
    )


def parse(data: dict[str, Any], source: str = "(config)") -> CollectorConfig:
    """Validate a parsed TOML document. Relative paths are relative to the working directory."""
    return replace(build(source, data, _root), source=source)


def load(path: str | Path) -> CollectorConfig:
    """Read and validate a collector config file; raises ConfigError listing every problem."""
    return parse(load_toml(path), str(path))
