"""``lifeline-lab``: bring the home-network lab up, break it on purpose, watch CAD.

Exit codes: 0 ok, 1 the lab could not do it (runtime), 2 usage (bad impairment, bad scenario).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lifeline_lab import impair, scenario
from lifeline_lab.errors import ImpairmentError, LabError, ScenarioError
from lifeline_lab.layout import VPN_VARIANTS
from lifeline_lab.state import DEFAULT_STATE_DIR, locked, running_labs
from lifeline_lab.topology import DEFAULT_PREFIX, Lab

F = TypeVar("F", bound=Callable[..., Any])


def _prefix_option(func: F) -> F:
    func = click.option(
        "--state-dir", default=DEFAULT_STATE_DIR, show_default=True, envvar="LIFELINE_LAB_STATE_DIR",
        help="where running labs record their state",
    )(func)  # fmt: skip
    return click.option(
        "--prefix", default=DEFAULT_PREFIX, show_default=True, envvar="LIFELINE_LAB_PREFIX",
        help="name prefix of the lab's namespaces (several labs run side by side)",
    )(func)  # fmt: skip


def _fail(exc: LabError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2 if isinstance(exc, ImpairmentError | ScenarioError) else 1)


def _need_root() -> None:
    if os.geteuid() != 0:
        click.echo("error: the lab needs root (network namespaces, nftables, WireGuard)", err=True)
        sys.exit(1)


@click.group()
def main() -> None:
    """The home-network lab: a dispatcher's home, VPN, hotspot and CAD in network namespaces."""


@main.command()
@_prefix_option
@click.option("--vpn", type=click.Choice(VPN_VARIANTS), default="client", show_default=True,
              help="client: WireGuard on the laptop; router: on the home router")  # fmt: skip
@click.option("--no-cadsim", is_flag=True, help="do not start the CAD server, DNS server and CAD client")
def up(prefix: str, state_dir: str, vpn: str, no_cadsim: bool) -> None:
    """Build the lab and leave it running."""
    _need_root()
    try:
        lab = Lab(prefix, vpn, state_dir=state_dir, cadsim=not no_cadsim, detach=True)
        with locked(lab):
            lab.up()
    except LabError as exc:
        _fail(exc)
        return
    t = lab.timings
    click.echo(
        f"lab {prefix!r} up ({vpn} VPN): namespaces {t.get('build_s', 0) * 1000:.0f} ms, "
        f"WireGuard {t.get('wireguard_s', 0) * 1000:.0f} ms"
    )
    for role, name in lab.namespaces.items():
        click.echo(f"  {role:<11} {name}")
    a = lab.addr
    click.echo(
        f"  CAD server {a.cad_server}:7000, DNS {a.dns} (cad.agency.example), VPN hub {a.vpnhub_public}"
    )
    click.echo(f"  CAD simulator log: {lab.cadsim_log}")
    click.echo(f"  fixture file:      {lab.fixture_path}")
    click.echo(f"try: ip netns exec {lab.ns('laptop')} fping -c 3 -t 1500 {a.cad_server}")


@main.command()
@_prefix_option
def down(prefix: str, state_dir: str) -> None:
    """Stop the lab's processes and delete its namespaces."""
    _need_root()
    try:
        lab = Lab.attach(prefix, state_dir)
        with locked(lab):
            lab.down()
    except LabError as exc:
        _fail(exc)
        return
    click.echo(f"lab {prefix!r} down ({lab.timings['teardown_s'] * 1000:.0f} ms)")


@main.command()
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(prefix: str, state_dir: str, as_json: bool) -> None:
    """Namespaces, links, active impairments, tunnel handshake, CAD simulator state."""
    try:
        lab = Lab.attach(prefix, state_dir)
        info = lab.status()
    except LabError as exc:
        others = running_labs(state_dir)
        if others:
            click.echo(f"(running labs: {', '.join(others)})", err=True)
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(info, indent=1, default=str))
        return
    click.echo(f"lab {info['prefix']!r} ({info['vpn']} VPN)")
    for role, (name, present) in info["namespaces"].items():
        click.echo(f"  {role:<11} {name:<20} {'present' if present else 'MISSING'}")
    click.echo("links:")
    for name, link in info["links"].items():
        click.echo(
            f"  {name:<10} {link['near']:<22} {link['near_state']:<11} ⇄ "
            f"{link['far']:<20} {link['far_state']}"
        )
    click.echo("impairments:")
    click.echo(impair.summary(impair.active(lab)))
    tunnel = info["tunnel"]
    age = tunnel.get("handshake_age_s")
    click.echo(
        f"tunnel: {tunnel['interface']} in {tunnel['namespace']}, endpoint {tunnel.get('endpoint') or '-'}, "
        f"last handshake {'never' if age is None else f'{age:.0f} s ago'}"
    )
    cad = info["cadsim"]
    last = cad["last"]
    click.echo(
        f"CAD simulator: {cad['state']}" + (f" (last: {last['event']} at {last['ts']})" if last else "")
    )
    dead = [name for name, alive in info["processes"].items() if not alive]
    if dead:
        click.echo(f"processes not running: {', '.join(dead)}")


_IMPAIR_HELP = f"""Apply an impairment, or clear them.

\b
  lifeline-lab impair LINK KIND [options]     KIND: {", ".join(impair.LINK_KINDS)}
  lifeline-lab impair power-off --node homerouter|hotspot
  lifeline-lab impair cad-down
  lifeline-lab impair dns-fail [--mode stop|drop]
  lifeline-lab impair clear [LINK [KIND]]
  lifeline-lab impair LINK loss --percent 0 --ramp-to 100 --over 90s --steps 18

LINK: primary, backup, broadband, cellular, hub, agency, tunnel. Values apply per direction
(up = away from the laptop).
"""


@main.command(help=_IMPAIR_HELP)
@_prefix_option
@click.argument("args", nargs=-1, required=True)
@click.option("--direction", type=click.Choice(impair.DIRECTIONS), default="both", show_default=True)
@click.option("--ms", "delay_ms", type=float, help="delay: milliseconds added per direction")
@click.option("--jitter", "jitter_ms", type=float, help="delay: ± milliseconds (uniform)")
@click.option("--percent", type=float, help="loss, burst-loss: percent of packets")
@click.option("--burst", "burst_len", type=float, help="burst-loss: mean burst length in packets")
@click.option("--kbit", "rate_kbit", type=float, help="rate: kbit/s")
@click.option("--latency", "latency_ms", type=float, help="rate: queue length in milliseconds")
@click.option("--mode", type=click.Choice(impair.DNS_MODES), help="dns-fail: stop the server or drop port 53")
@click.option("--node", type=click.Choice(impair.POWER_NODES), default="homerouter", show_default=True)
@click.option("--ramp-to", type=float, help="ramp the main value from its given value to this one")
@click.option("--over", default="60s", show_default=True, help="ramp duration")
@click.option("--steps", type=int, default=10, show_default=True, help="ramp steps")
def impair_cmd(
    prefix: str,
    state_dir: str,
    args: tuple[str, ...],
    direction: str,
    node: str,
    ramp_to: float | None,
    over: str,
    steps: int,
    **params: Any,
) -> None:
    try:
        imp = None if args[0] == "clear" else _parse_impairment(args, direction, node, params)
        _need_root()
        lab = Lab.attach(prefix, state_dir)
        if imp is None:
            if len(args) > 3:
                raise ImpairmentError("usage: impair clear [LINK [KIND]]")
            with locked(lab):
                lab.reload()
                link = args[1] if len(args) > 1 else None
                count = impair.clear(lab, link, args[2] if len(args) > 2 else None)
            click.echo(f"cleared {count} impairment(s)")
            return
        if imp.kind in impair.LINK_KINDS and imp.link not in lab.links():
            raise ImpairmentError(f"link: must be one of {', '.join(lab.links())} (got {imp.link!r})")
        if ramp_to is not None:
            _ramp(lab, imp, ramp_to, over, steps)
            return
        with locked(lab):
            lab.reload()
            impair.apply(lab, imp)
        click.echo(f"applied: {imp.describe()}")
    except LabError as exc:
        _fail(exc)


def _parse_impairment(
    args: tuple[str, ...], direction: str, node: str, params: dict[str, Any]
) -> impair.Impairment:
    """``LINK KIND`` or a node/service kind alone → a checked impairment (usage errors: exit 2)."""
    if args[0] in impair.NODE_KINDS + impair.SERVICE_KINDS:
        if len(args) != 1:
            raise ImpairmentError(f"usage: impair {args[0]} [options]")
        kind, link = args[0], node if args[0] == "power-off" else ""
    elif len(args) == 2:
        link, kind = args
        if kind not in impair.LINK_KINDS:
            raise ImpairmentError(f"kind: must be one of {', '.join(impair.LINK_KINDS)} (got {kind!r})")
    else:
        raise ImpairmentError("usage: impair LINK KIND [options] | impair clear [LINK [KIND]] (see --help)")
    return impair.make(kind, link, direction, **params)


main.add_command(impair_cmd, name="impair")


def _ramp(lab: Lab, imp: impair.Impairment, ramp_to: float, over: str, steps: int) -> None:
    from lifeline_wire.tomlcfg import parse_duration

    field = scenario.RAMP_FIELDS.get(imp.kind)
    if field is None:
        raise ImpairmentError(f"--ramp-to: {imp.kind} cannot ramp (only {', '.join(scenario.RAMP_FIELDS)})")
    try:
        seconds = parse_duration(over)
    except ValueError as exc:
        raise ImpairmentError(f"--over: {exc}") from None
    start = float(getattr(imp, field))

    def on_step(step: impair.Impairment) -> None:
        click.echo(f"applied: {step.describe()}")

    with locked(lab):
        lab.reload()
        impair.ramp(lab, imp, field, start, ramp_to, seconds, steps, on_step)


@main.command()
@_prefix_option
@click.argument("name")
@click.option("--keep", is_flag=True, help="leave the last impairments in place at the end")
@click.option("--check", is_flag=True, help="exit 1 if CAD lost / not lost differs from the expectation")
def run(prefix: str, state_dir: str, name: str, keep: bool, check: bool) -> None:
    """Play a scenario (a shipped name or a .toml path) in real time."""
    _need_root()
    try:
        sc = scenario.load(name)
        lab = Lab.attach(prefix, state_dir)
        # No lock for the whole run: `status` and a hand-made `impair` stay usable meanwhile.
        result = scenario.run(lab, sc, emit=click.echo, keep=keep)
    except LabError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        click.echo("interrupted; impairments cleared")
        sys.exit(1)
    if check and result.cad_lost != sc.expect.cad_lost:
        sys.exit(1)


@main.command("scenarios")
def list_scenarios() -> None:
    """List the shipped scenarios and what each should produce."""
    for name in scenario.shipped():
        try:
            sc = scenario.load(name)
        except ScenarioError as exc:
            click.echo(f"{name}: INVALID: {exc}")
            continue
        e = sc.expect
        click.echo(
            f"{name:<30} {sc.duration:>4.0f}s  cad_lost={str(e.cad_lost).lower():<5} layer={e.layer:<7} "
            f"page={str(e.page).lower():<5} {sc.description}"
        )


if __name__ == "__main__":
    main()
