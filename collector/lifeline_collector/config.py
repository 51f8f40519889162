"""The collector's TOML config, validated once into frozen dataclasses (every error, dotted path)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lifeline_collector.notify import REGISTRY, NotifierConfig
from lifeline_collector.remote_write import RemoteWriteConfig, read_remote_write
from lifeline_wire.tomlcfg import ConfigError, Section, build, load_toml

DEFAULT_LISTEN = "127.0.0.1:8480"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8480"
DEFAULT_STORE_PATH = "/var/lib/lifeline-collector/lifeline.db"
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_RETENTION = 30 * 86400.0

__all__ = [
    "AlertingSection",
    "CollectorConfig",
    "ConfigError",
    "ExpositionSection",
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


@dataclass(frozen=True, slots=True)
class AlertingSection:
    cad_failures: int = 3  # consecutive failed rounds of a role="cad" target before paging
    silent_after: float = 15.0
    evaluate_interval: float = 1.0
    resend_interval: float = 60.0


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
    remote_write: RemoteWriteConfig = RemoteWriteConfig()  # noqa: RUF009 - frozen, shared safely
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
    section.finish()
    return ServerSection(listen=listen, max_body_bytes=max_body, public_url=public_url.rstrip("/"))


def _store(section: Section) -> StoreSection:
    path = section.text("path", DEFAULT_STORE_PATH)
    if section.has("path") and not path:
        section.error("path", "must not be empty")
    retention = section.duration("retention", DEFAULT_RETENTION, min=3600.0)
    section.finish()
    return StoreSection(path=path, retention=retention)


def _alerting(section: Section) -> AlertingSection:
    cad_failures = section.integer("cad_failures", 3, min=1, max=1000)
    silent_after = section.duration("silent_after", 15.0, min=1.0, max=86400.0)
    evaluate_interval = section.duration("evaluate_interval", 1.0, min=0.1, max=60.0)
    resend_interval = section.duration("resend_interval", 60.0, min=1.0, max=86400.0)
    if evaluate_interval > silent_after:
        section.error("evaluate_interval", "must not be longer than silent_after")
    section.finish()
    return AlertingSection(
        cad_failures=cad_failures,
        silent_after=silent_after,
        evaluate_interval=evaluate_interval,
        resend_interval=resend_interval,
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
    remote_write = read_remote_write(root.table("remote_write"))
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
        remote_write=remote_write,
    )


def parse(data: dict[str, Any], source: str = "(config)") -> CollectorConfig:
    """Validate a parsed TOML document. Relative paths are relative to the working directory."""
    return replace(build(source, data, _root), source=source)


def load(path: str | Path) -> CollectorConfig:
    """Read and validate a collector config file; raises ConfigError listing every problem."""
    return parse(load_toml(path), str(path))
