"""``lifeline-collector``: serve, manage agents and their tokens, check a config.

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import UTC, datetime
from types import FrameType

import click

from lifeline_collector import runtime
from lifeline_collector.config import CollectorConfig, load
from lifeline_collector.errors import CollectorError, StoreError
from lifeline_collector.people.cli import cli_audit
from lifeline_collector.people.cli import commands as people_commands
from lifeline_collector.store import Store
from lifeline_collector.store.backends import safe_dsn
from lifeline_wire.schema import ID_RE
from lifeline_wire.tomlcfg import ConfigError

DEFAULT_CONFIG = "/etc/lifeline/collector.toml"

config_option = click.option(
    "--config",
    "config_path",
    envvar="LIFELINE_COLLECTOR_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Collector config file (TOML).",
)


def _load(path: str) -> CollectorConfig:
    try:
        return load(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _store(config: CollectorConfig) -> Store:
    try:
        return Store(config.store.location, pool_size=config.store.pool_size)
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _now_ms() -> int:
    return int(time.time() * 1000)


@click.group()
@click.version_option(package_name="lifeline")
def main() -> None:
    """Lifeline collector: ingest from agents, /metrics for Prometheus, alerts for supervisors."""


@main.command()
@config_option
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: str, log_level: str) -> None:
    """Serve the ingest API, /metrics and alerts (uvicorn; SIGTERM or Ctrl-C stops it cleanly)."""
    import uvicorn

    from lifeline_collector.app import create_app
    from lifeline_collector.http_server import uvicorn_config

    config = _load(config_path)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Over PostgreSQL this serves at once beside the other collectors; the one holding the lease
    # evaluates alerts and notifies (lifeline_collector.leader, contended for inside the service).
    try:
        app = create_app(config)
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    runtime.tune_gc()  # after the fleet is loaded: full collections no longer stall ingest
    # Forwarding headers believed only from server.trusted_proxies; slow request headers cut off.
    server = uvicorn.Server(uvicorn_config(app, config.server, log_level=log_level))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the handlers
    # that were there before it started: make those no-ops so a requested stop exits with 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stopped)
    server.run()
    if not server.started:
        sys.exit(1)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The stop signal uvicorn re-raises after its graceful shutdown: nothing left to do."""


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file: str) -> None:
    """Validate FILE and report every problem with its key path."""
    config = _load(file)
    kinds = ", ".join(f"{n.name} ({n.kind})" for n in config.notifiers) or "none"
    click.echo(
        f"{file}: ok — listen {config.server.listen}, store {safe_dsn(config.store.location)},"
        f" notifiers: {kinds},"
        f" routes: {len(config.routes) or 'none (every notifier)'}"
    )


@main.group()
def agents() -> None:
    """Register agents, list them, revoke their tokens."""


@agents.command("add")
@click.argument("agent_id")
@click.option("--site", default="", help="Site (dispatch center) the position belongs to.")
@click.option("--position", default="", help="Position name or number as supervisors say it.")
@config_option
def agents_add(agent_id: str, site: str, position: str, config_path: str) -> None:
    """Register AGENT_ID and print its token (shown once; only its hash is stored)."""
    import re

    if not re.match(ID_RE, agent_id):
        raise click.BadParameter(f"must match {ID_RE}", param_hint="AGENT_ID")
    store = _store(_load(config_path))
    try:
        token = store.add_agent(agent_id, site=site, position=position, now_ms=_now_ms())
        cli_audit(store, "agent.add", agent_id, {"site": site, "position": position})
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    click.echo(
        f"agent {agent_id} registered. Its token (shown only now; put it in the agent's token_file):",
        err=True,
    )
    click.echo(token)


@agents.command("list")
@config_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked agents.")
def agents_list(config_path: str, include_revoked: bool) -> None:
    """List registered agents with site, position and when they last reported."""
    store = _store(_load(config_path))
    try:
        rows = store.agents(include_revoked=include_revoked)
    finally:
        store.close()
    click.echo(f"{'AGENT':<24} {'SITE':<16} {'POSITION':<12} {'LAST SEEN (UTC)':<20} STATUS")
    for row in rows:
        seen = (
            datetime.fromtimestamp(row.last_seen_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if row.last_seen_ms
            else "never"
        )
        status = "active" if row.active else "revoked"
        click.echo(f"{row.id:<24} {row.site:<16} {row.position:<12} {seen:<20} {status}")


@agents.command("revoke")
@click.argument("agent_id")
@config_option
def agents_revoke(agent_id: str, config_path: str) -> None:
    """Revoke AGENT_ID's token: its requests get 401 from now on."""
    store = _store(_load(config_path))
    try:
        store.revoke_agent(agent_id, now_ms=_now_ms())
        cli_audit(store, "agent.revoke", agent_id)
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    click.echo(f"agent {agent_id} revoked")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


@main.group()
def silences() -> None:
    """Mute alerts by label matchers for a while (who and why are recorded)."""


@silences.command("add")
@click.option(
    "--matcher",
    "-m",
    "matchers",
    multiple=True,
    required=True,
    help="LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX; repeat for several (all must match).",
)
@click.option("--duration", default="1h", show_default=True, help='How long, e.g. "30m", "2h".')
@click.option("--by", "created_by", required=True, help="Who silences (recorded).")
@click.option("--comment", default="", help="Why (recorded).")
@config_option
def silences_add(
    matchers: tuple[str, ...], duration: str, created_by: str, comment: str, config_path: str
) -> None:
    """Silence the alerts all MATCHERs match, from now for DURATION; prints the silence id."""
    from lifeline_collector.alerting import actions
    from lifeline_collector.alerting.store import AlertStore
    from lifeline_wire.tomlcfg import parse_duration

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from None
    store = _store(_load(config_path))
    try:
        silence = actions.create_silence(
            AlertStore(store),
            matchers,
            now=time.time(),
            duration=seconds,
            created_by=created_by,
            comment=comment,
        )
        cli_audit(
            store, "silence", ",".join(matchers), {"id": silence.id, "by": created_by, "reason": comment}
        )
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2 if not isinstance(exc, StoreError) else 1)
    finally:
        store.close()
    click.echo(f"silence added until {_when(silence.ends_at)} UTC:", err=True)
    click.echo(silence.id)


@silences.command("list")
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
@config_option
def silences_list(include_expired: bool, config_path: str) -> None:
    """List silences: id, state, matchers, until, who and why."""
    from lifeline_collector.alerting.store import AlertStore

    store = _store(_load(config_path))
    now = time.time()
    try:
        rows = AlertStore(store).silences(since_ms=None if include_expired else round(now * 1000))
    finally:
        store.close()
    click.echo(f"{'ID':<36}  {'STATE':<8} {'ENDS (UTC)':<19}  {'BY':<14} MATCHERS — COMMENT")
    for row in rows:
        matchers = ",".join(str(m) for m in row.matchers)
        note = f" — {row.comment}" if row.comment else ""
        click.echo(
            f"{row.id:<36}  {row.state(now):<8} {_when(row.ends_at):<19}  {row.created_by:<14}"
            f" {matchers}{note}"
        )


@silences.command("expire")
@click.argument("silence_id")
@config_option
def silences_expire(silence_id: str, config_path: str) -> None:
    """End silence SILENCE_ID now (it stays listed with --all)."""
    from lifeline_collector.alerting import actions
    from lifeline_collector.alerting.store import AlertStore

    store = _store(_load(config_path))
    try:
        actions.expire_silence(AlertStore(store), silence_id, now=time.time())
        cli_audit(store, "silence.expire", silence_id)
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    click.echo(f"silence {silence_id} expired")


@main.group()
def alerts() -> None:
    """List active alerts and acknowledge them."""


@alerts.command("list")
@config_option
def alerts_list(config_path: str) -> None:
    """Active alerts as the collector last recorded them, with silences and acknowledgements."""
    from lifeline_collector.alerting import actions
    from lifeline_collector.alerting.store import AlertStore

    store = _store(_load(config_path))
    try:
        rows = actions.list_alerts(AlertStore(store), now=time.time())
    finally:
        store.close()
    click.echo(f"{'FINGERPRINT':<16}  {'STATE':<8} {'SINCE (UTC)':<19}  {'NOTE':<22} SUMMARY")
    for row in rows:
        alert = row.alert
        inhibited = row.status.get("inhibitedBy")
        if row.silenced_by:
            note = "silenced"
        elif isinstance(inhibited, list) and inhibited:
            note = "inhibited"
        elif row.ack is not None:
            note = f"ack {row.ack.by}"[:22]
        else:
            note = ""
        summary = alert.annotations.get("summary", alert.name)
        click.echo(
            f"{alert.fingerprint:<16}  {alert.state.value:<8} {_when(alert.starts_at):<19}"
            f"  {note:<22} {summary}"
        )


@alerts.command("ack")
@click.argument("fingerprint")
@click.option("--by", required=True, help="Who acknowledges (recorded).")
@click.option("--comment", default="", help="What is being done (recorded).")
@config_option
def alerts_ack(fingerprint: str, by: str, comment: str, config_path: str) -> None:
    """Acknowledge alert FINGERPRINT: no more repeats or escalation for it."""
    from lifeline_collector.alerting import actions
    from lifeline_collector.alerting.store import AlertStore

    store = _store(_load(config_path))
    try:
        ack = actions.acknowledge(AlertStore(store), fingerprint, by=by, comment=comment, now=time.time())
        cli_audit(store, "ack", fingerprint, {"by": by, "note": comment})
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    click.echo(f"alert {fingerprint} acknowledged by {ack.by} at {_when(ack.at)} UTC")


@main.command()
@config_option
def migrate(config_path: str) -> None:
    """Bring the store's schema up to date and say its version (a collector also does it at start)."""
    store = _store(_load(config_path))
    try:
        click.echo(f"{store.backend} store at schema version {store.schema_version()}")
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()


@main.command()
def quickstart() -> None:
    """Start a collector and an agent on this machine (what `make run` does)."""
    from lifeline_collector import quickstart as module  # imported only when used

    module.main()


for _command in people_commands(_load, _store, config_option):
    main.add_command(_command)
