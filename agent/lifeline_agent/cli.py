"""``lifeline-agent``: a thin command line over the agent library.

Exit codes: 0 ok, 1 runtime failure (or a failed probe for ``probe-once``, a stopped agent for
``status``), 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from typing import Any, NoReturn

import click
import msgspec

from lifeline_agent import __version__
from lifeline_agent.config import AgentConfig, ConfigError, Target, load
from lifeline_agent.discovery import all_targets
from lifeline_agent.errors import AgentError
from lifeline_agent.health import Assessment, render_status
from lifeline_agent.logs import configure, context_of
from lifeline_agent.probes import KINDS
from lifeline_agent.service import AgentService
from lifeline_agent.status import STATUS_FILE, assessment_from_dict, read_status

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
STALE_STATUS = 5.0


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


def _load(path: str) -> AgentConfig:
    try:
        return load(path)
    except ConfigError as exc:
        for key, reason in exc.problems:
            click.echo(f"{key}: {reason}", err=True)
        _fail(f"{path}: {len(exc.problems)} problem(s)", EXIT_CONFIG)


def _token(config: AgentConfig) -> str:
    try:
        return config.agent.read_token()
    except OSError as exc:
        _fail(f"agent.token_file: cannot read {config.agent.token_file!r}: {exc.strerror}", EXIT_CONFIG)


def _setup_logging(config: AgentConfig, level: str | None) -> None:
    configure(level or config.agent.log_level, config.agent.log_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lifeline-agent")
def main() -> None:
    """Lifeline agent: watches every layer between this dispatch laptop and CAD."""


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file: str) -> None:
    """Validate FILE and print every problem, one per line, with its dotted key path."""
    try:
        config = load(file)
    except ConfigError as exc:
        for key, reason in exc.problems:
            click.echo(f"{key}: {reason}")
        _fail(f"{file}: {len(exc.problems)} problem(s)", EXIT_CONFIG)
    unsupported = sorted({t.kind for t in config.targets if t.kind not in KINDS})
    click.echo(f"{file}: ok ({len(config.targets)} configured targets, agent {config.agent.id})")
    if unsupported:
        click.echo(f"note: no probe for kind(s) {', '.join(unsupported)} yet; those targets are not probed")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Agent TOML.")
@click.option("--once", is_flag=True, help="Probe every target once, print the batch, send nothing.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
def run(config_path: str, once: bool, log_level: str | None) -> None:
    """Run the agent until SIGTERM or Ctrl-C (the last batch is spooled before exit)."""
    config = _load(config_path)
    _setup_logging(config, log_level)
    if once:
        service = AgentService(config)
        batch = asyncio.run(service.once())
        click.echo(json.dumps(msgspec.to_builtins(batch), indent=2))
        return
    service = AgentService(config, token=_token(config))
    try:
        asyncio.run(_run_until_signal(service))
    except AgentError as exc:
        _fail(f"lifeline-agent: {exc}", EXIT_RUNTIME)


async def _run_until_signal(service: AgentService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@main.command("probe-once")
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--debug", is_flag=True, help="Also print the probe's log and every sample it produced.")
def probe_once(name: str, config_path: str, debug: bool) -> None:
    """Probe target NAME once and print the result (exit 1 if the probe failed)."""
    config = _load(config_path)
    targets = all_targets(config)
    target = next((t for t in targets if t.name == name), None)
    if target is None:
        names = ", ".join(t.name for t in targets) or "(none)"
        _fail(f"no target named {name!r}; targets: {names}", EXIT_CONFIG)
    capture = _Capture()
    root = logging.getLogger("lifeline_agent")
    if debug:
        root.addHandler(capture)
        root.setLevel(logging.DEBUG)
    try:
        service = AgentService(config, targets=(target,))
        result = asyncio.run(service.runner.run_once(target))
    finally:
        root.removeHandler(capture)
    click.echo(_describe(target, result))
    if debug:
        samples, events = service.recorder.drain()
        click.echo("\nsamples:")
        for sample in samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            click.echo(f"  {sample.name}{{{labels}}} {sample.value}")
        for event in events:
            click.echo(f"  event {event.type} {event.attributes}")
        click.echo("\nlog:")
        for record in capture.records:
            context = " ".join(f"{k}={v}" for k, v in context_of(record).items())
            click.echo(f"  {record.levelname.lower():7} {record.getMessage()} [{context}]")
        click.echo(f"\ndetail: {result.detail}")
    if not result.success:
        raise SystemExit(EXIT_RUNTIME)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}ms"


def _describe(target: Target, result: Any) -> str:
    where = f"{target.host}:{target.port}" if target.kind == "tcp" else target.host
    head = f"{target.name} ({target.kind} {where}, role {target.role}, path {target.path})"
    if target.interface:
        head += f" via {target.interface}"
    state = "ok" if result.success else f"FAILED: {result.reason}"
    lines = [
        head,
        f"  result    {state}",
        f"  rtt       min {_ms(result.rtt_min)}  avg {_ms(result.rtt_avg)}  max {_ms(result.rtt_max)}",
        f"  jitter    {_ms(result.jitter)}",
        f"  packets   {result.received}/{result.sent} received ({result.loss * 100:.0f}% loss)",
        f"  duration  {_ms(result.duration)}",
    ]
    return "\n".join(lines)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the raw status.json.")
@click.option("--details", is_flag=True, help="Also list every target, provider and route (for IT).")
def status(config_path: str, as_json: bool, details: bool) -> None:
    """Show what the running agent sees now (exit 1 if it is not running)."""
    config = _load(config_path)
    try:
        data = read_status(config.agent.state_dir)
    except FileNotFoundError:
        _fail(
            f"Lifeline is not running: no {STATUS_FILE} in {config.agent.state_dir} "
            "(is the agent running? start it with `lifeline-agent run`).",
            EXIT_RUNTIME,
        )
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {STATUS_FILE} in {config.agent.state_dir}: {exc}", EXIT_RUNTIME)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    age = time.time() - int(data.get("updated_ms", 0)) / 1000
    running = bool(data.get("running")) and age < STALE_STATUS
    click.echo(_render_status(data, age, running, details))
    if not running:
        raise SystemExit(EXIT_RUNTIME)


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 90 else f"{seconds / 60:.0f} min ago"


def _render_status(data: dict[str, Any], age: float, running: bool, details: bool = False) -> str:
    """The dispatcher's screen (health's render_status), framed by whether it is current."""
    lines: list[str] = []
    if not running:
        why = "has stopped" if not data.get("running") else "is not responding"
        lines += [
            f"!! Lifeline {why}: this screen is from {_ago(age)} and may be out of date.",
            "!! If CAD seems slow or down, call the floor.",
            "",
        ]
    assessment: Assessment | None = None
    raw = data.get("assessment")
    if isinstance(raw, dict):
        try:
            assessment = assessment_from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            lines.append(f"(cannot read the assessment in {STATUS_FILE}: {exc})")
    if assessment is not None:
        lines.append(render_status(assessment).rstrip("\n"))
    else:
        lines.append("Lifeline is starting: no assessment yet.")
    warning = data.get("warning") or {}
    if warning.get("text") and warning.get("desktop_unavailable"):
        lines.append(f"(no desktop pop-up: {warning['desktop_unavailable']})")
    lines.append("")
    where = " ".join(x for x in (data.get("site", ""), data.get("position", "")) if x)
    state = f"running, updated {age:.1f}s ago" if running else f"last update {_ago(age)}"
    lines.append(f"agent {data.get('agent')} {f'({where}) ' if where else ''}— {state}")
    checks = []
    for t in data.get("targets", []):
        up = t.get("up")
        checks.append(f"{t.get('name')} {'waiting' if up is None else ('up' if up else 'DOWN')}")
    if checks:
        lines.append("checks: " + ", ".join(checks))
    delivery = data.get("delivery", {})
    last_ok = int(delivery.get("last_ok_ms") or 0)
    if last_ok:
        lines.append(f"collector: last report {_ago(time.time() - last_ok / 1000)}")
    else:
        lines.append("collector: nothing delivered yet (warnings on this screen work without it)")
    if details:
        lines += ["", *_details(data)]
    return "\n".join(lines)


def _details(data: dict[str, Any]) -> list[str]:
    rows = [("TARGET", "ROLE", "PATH", "KIND", "STATE", "RTT", "LOSS", "FAILS", "REASON")]
    for t in data.get("targets", []):
        up = t.get("up")
        loss = t.get("loss")
        rows.append(
            (
                str(t.get("name")),
                str(t.get("role")),
                str(t.get("path")),
                str(t.get("kind")),
                "waiting" if up is None else ("up" if up else "DOWN"),
                _ms(t.get("rtt_avg")),
                "-" if loss is None else f"{loss * 100:.0f}%",
                str(t.get("consecutive_failures", 0)),
                str(t.get("reason") or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    providers = data.get("providers") or {}
    if providers:
        lines.append("")
        for name, info in providers.items():
            ok = info.get("available")
            lines.append(
                f"provider {name}: {'available' if ok else 'UNAVAILABLE — ' + str(info.get('reason'))}"
            )
    routes = data.get("routes") or {}
    for c in routes.get("cad", []):
        how = f"via {c['interface']} from {c['source'] or '?'}" if c.get("interface") else "no route"
        flag = " — MIS-ROUTED" if c.get("misrouted") else ""
        lines.append(f"route to CAD {c['target']} ({c['address']}): {how}{flag}")
    spool = data.get("spool", {})
    delivery = data.get("delivery", {})
    lines.append(f"spool: {spool.get('batches', 0)} batches waiting")
    lines.append(f"collector: {delivery.get('endpoint') or '(none configured)'}")
    if delivery.get("last_error"):
        lines.append(f"last delivery error: {delivery['last_error']}")
    return lines
