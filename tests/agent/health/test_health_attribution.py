"""Which layer a silence is charged to: the evidence decides, and where it cannot, the verdict
names both layers.

The table breaks one thing at a time on a simulated position and varies what the agent can see:
the concentrator probed at its address inside the tunnel or at its public address, the VPN's
byte counters read or not, an agency target inside the tunnel or only CAD. A tunnel that carries
nothing while its endpoint answers is the tunnel's, never CAD's; CAD is blamed only when something
else inside the tunnel answers (or the tunnel demonstrably receives) and CAD stays silent or
refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lifeline_agent.config import Target
from lifeline_agent.health.attribution import RX_CHATTER, infer_vpn, tunnel_receiving
from lifeline_agent.health.layers import VPN_INFERRED, LayerFinding, Tuning

from .conftest import laptop_vpn_targets

Position = Any  # the simulated position from conftest.py

INNER = "inner"  # the concentrator probed at its tunnel address (deploy/agent.example.toml)
PUBLIC = "public"  # … at its public address only (what discovery adds)
CAD_ONLY = "cad-only"  # nothing inside the tunnel but CAD


def targets(variant: str) -> list[Target]:
    base = laptop_vpn_targets()
    if variant == INNER:
        return base
    public = Target("vpn-203.0.113.10", "vpn", "icmp", "203.0.113.10", path="primary")
    if variant == PUBLIC:
        return [public if t.name == "vpn-gw" else t for t in base]
    keep = ("gw", "isp", "cad-ping", "cad-port", "hotspot-vpn")
    return [public, *(t for t in base if t.name in keep)]


def _down(*layers: str) -> Callable[[Position], None]:
    def apply(pos: Position) -> None:
        for layer in layers:
            pos.cond(layer).down = True

    return apply


def _refused(pos: Position) -> None:
    pos.cond("cad").refused = True


TUNNEL_FINE = ", internet fine"
DEAD_TUNNEL = "VPN tunnel down — nothing comes back through it"
ANSWERS = " (the concentrator answers at its public address)"

# (what the agent sees, what breaks, seconds, counters read, expected layer, expected verdict)
TABLE = [
    # home side ↔ tunnel: a cut before the tunnel is never the tunnel's
    (INNER, "internet", 6, False, "internet", "home internet (ISP) down, router fine"),
    (PUBLIC, "internet", 6, False, "internet", "home internet (ISP) down, router fine"),
    (CAD_ONLY, "internet", 6, True, "internet", "home internet (ISP) down, router fine"),
    # tunnel ↔ agency ↔ CAD, concentrator probed inside the tunnel: certain
    (INNER, "vpn", 6, False, "vpn", "VPN tunnel down, internet fine"),
    (INNER, "agency", 6, False, "agency", "agency network unreachable through the tunnel"),
    (INNER, "dns", 6, False, "dns", "agency DNS not answering"),
    (INNER, "cad", 6, False, "cad", "CAD server not answering"),
    (INNER, "refused", 6, False, "cad", "CAD server refusing connections"),
    # … probed at its public address only: the endpoint answering proves nothing about the tunnel
    (PUBLIC, "vpn", 6, False, "vpn", f"VPN tunnel or agency network down — nothing comes back through the tunnel{ANSWERS}"),
    (PUBLIC, "vpn", 6, True, "vpn", f"VPN tunnel or agency network down — nothing comes back through the tunnel{ANSWERS}"),
    (PUBLIC, "vpn", 30, True, "vpn", f"{DEAD_TUNNEL}{ANSWERS}{TUNNEL_FINE}"),
    (PUBLIC, "concentrator", 6, False, "vpn", f"VPN tunnel down (the concentrator does not answer at its public address){TUNNEL_FINE}"),
    (PUBLIC, "agency", 6, False, "vpn", f"VPN tunnel or agency network down — nothing comes back through the tunnel{ANSWERS}"),
    (PUBLIC, "agency", 30, True, "vpn", f"VPN tunnel or agency network down — nothing comes back through the tunnel{ANSWERS}"),
    (PUBLIC, "dns", 6, False, "dns", "agency DNS not answering"),
    (PUBLIC, "cad", 6, False, "cad", "CAD server not answering"),
    (PUBLIC, "refused", 6, False, "cad", "CAD server refusing connections"),
    # … and nothing inside the tunnel but CAD: the counters decide, else both are named
    (CAD_ONLY, "cad", 6, False, "vpn", f"VPN tunnel or CAD server down — nothing comes back through the tunnel{ANSWERS}"),
    (CAD_ONLY, "cad", 6, True, "cad", "CAD server not answering"),
    (CAD_ONLY, "vpn", 6, True, "vpn", f"VPN tunnel or CAD server down — nothing comes back through the tunnel{ANSWERS}"),
    (CAD_ONLY, "vpn", 30, True, "vpn", f"{DEAD_TUNNEL}{ANSWERS}{TUNNEL_FINE}"),
    (CAD_ONLY, "refused", 6, False, "cad", "CAD server refusing connections"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "broken", "seconds", "counters", "layer", "verdict"),
    TABLE,
    ids=[f"{v}-{b}-{s}s-{'counters' if c else 'no-counters'}" for v, b, s, c, _l, _t in TABLE],
)
def test_attribution_table(
    position: Callable[..., Position],
    variant: str,
    broken: str,
    seconds: int,
    counters: bool,
    layer: str,
    verdict: str,
) -> None:
    pos = position(targets(variant), counters=counters)
    if broken == "refused":
        _refused(pos)
    else:
        _down(broken)(pos)
    run = pos.run(seconds)
    a = run[-1]
    assert (a.verdict_layer, a.verdict) == (layer, verdict)
    assert a.verdict_state == "failed"
    # Never CAD while the path to it is not shown to work, at any moment of the outage.
    if layer != "cad":
        assert all(x.verdict_layer != "cad" for x in run), [x.verdict for x in run]


def test_a_blackout_through_the_tunnel_is_not_packet_loss(position: Callable[..., Position]) -> None:
    """The concentrator drops the tunnel with its public address probed as well (discovery adds it
    beside the configured tunnel address): every probe through the tunnel gets nothing — a failed
    tunnel, not "VPN tunnel losing packets (5 %)" diluted by the endpoint's answers."""
    both = [*targets(INNER), Target("vpn-203.0.113.10", "vpn", "icmp", "203.0.113.10", path="primary")]
    pos = position(both)
    pos.cond("vpn").down = True
    run = pos.run(30)
    assert all("losing packets" not in a.verdict for a in run), {a.verdict for a in run}
    assert (run[-1].verdict_layer, run[-1].verdict_state) == ("vpn", "failed")
    assert run[-1].verdict.startswith("VPN tunnel down")
    assert run[-1].time_to_loss == 0.0


def test_the_tunnel_verdict_comes_within_the_fail_hold(position: Callable[..., Position]) -> None:
    """Named as soon as the layers behind it are judged failed: no later than a CAD-only cut."""
    pos = position(targets(PUBLIC))
    pos.cond("vpn").down = True
    started = pos.clock.time()
    first = next(a for a in pos.run(8) if a.verdict_layer != "none")
    assert first.verdict_layer == "vpn"
    assert first.at - started <= Tuning().fail_hold + 1.5


def test_a_tunnel_that_comes_back_stops_being_blamed(position: Callable[..., Position]) -> None:
    pos = position(targets(PUBLIC), counters=True)
    pos.cond("vpn").down = True
    assert pos.run(8)[-1].verdict_layer == "vpn"
    pos.cond("vpn").down = False
    after = pos.run(20)
    assert after[-1].verdict == "healthy"
    assert all(a.verdict_layer in ("vpn", "none") for a in after)


HOME_TABLE = [
    # (probes and facts the agent has, what breaks, what it names)
    ("router probe, link facts", "router", "router", "home router unreachable"),
    ("router probe, no link facts", "router", "router", "home network or home router down"),
    ("router probe, link facts", "internet", "internet", "home internet (ISP) down, router fine"),
    ("no router probe, link facts", "internet", "internet", "home router or home internet (ISP) down"),
    ("no router probe, link facts", "router", "internet", "home router or home internet (ISP) down"),
]


@pytest.mark.parametrize(
    ("sees", "broken", "layer", "verdict"), HOME_TABLE, ids=[f"{s}-{b}" for s, b, _l, _v in HOME_TABLE]
)
def test_home_side_attribution_table(
    position: Callable[..., Position], sees: str, broken: str, layer: str, verdict: str
) -> None:
    """The home side's pairs: a silent first hop is the router only when something says the home
    network itself is up; a silent ISP host is the ISP only when the router is seen answering."""
    chosen = (
        targets(INNER) if sees.startswith("router probe") else [t for t in targets(INNER) if t.name != "gw"]
    )
    pos = position(chosen)
    if sees.endswith("no link facts"):
        del pos.facts["routes"], pos.facts["wifi"]
        pos.run(45)  # what it knew of the link has gone stale
    pos.cond(broken).down = True
    a = pos.run(6)[-1]
    assert (a.verdict_layer, a.verdict) == (layer, verdict)


def test_refused_connects_are_answers_not_lost_packets(position: Callable[..., Position]) -> None:
    """The CAD server refuses for 8 s and comes back: a refusal came back through the tunnel, so
    it is not packet loss — no "CAD connection losing packets (20 %)" for the minute after."""
    pos = position()
    pos.cond("cad").refused = True
    assert pos.run(8)[-1].verdict == "CAD server refusing connections"
    pos.clear()
    after = pos.run(40)
    assert all("losing packets" not in a.layer("cad").reason for a in after), {
        a.layer("cad").reason for a in after
    }
    assert after[-1].verdict == "healthy"


def _around(internet: str, router: str = "ok", **beyond: str) -> dict[str, str]:
    states = dict.fromkeys(("power", "link", "router", "internet", "vpn", "agency", "dns", "cad"), "unknown")
    return {**states, "router": router, "internet": internet, **beyond}


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (_around("ok"), LayerFinding("unknown", "not measured (no probe through the tunnel)")),
        (_around("ok", agency="failed", cad="failed"), LayerFinding("failed", VPN_INFERRED, "down")),
        (
            _around("unknown", cad="failed"),
            LayerFinding("failed", "VPN tunnel or home internet down (home VPN router)", "down"),
        ),
        (
            _around("failed", cad="failed"),
            LayerFinding("unknown", "cannot tell: the way to the tunnel is down"),
        ),
        (
            _around("ok", agency="ok", cad="failed"),
            LayerFinding("ok", "carries traffic (judged from the agency side)"),
        ),
    ],
)
def test_a_tunnel_without_evidence_of_its_own_is_judged_from_around_it(
    states: dict[str, str], expected: LayerFinding
) -> None:
    """Behind a home VPN router the tunnel is not seen: every target beyond it silent while the
    internet answers is the tunnel; anything answering beyond it proves it carries traffic."""
    assert infer_vpn(states) == expected


@pytest.mark.parametrize(
    ("counters", "now", "expected"),
    [
        ([(0.0, 1000.0, 1000.0), (5.0, 1000.0 + RX_CHATTER + 1, 2000.0)], 5.0, True),
        ([(0.0, 1000.0, 1000.0), (5.0, 1000.0 + RX_CHATTER, 2000.0)], 5.0, False),  # chatter only
        ([(0.0, 1000.0, 1000.0), (2.5, 1000.0, 2000.0)], 2.5, None),  # sending for under 2 s
        ([(0.0, 1000.0, 1000.0), (5.0, 10.0, 2000.0)], 5.0, None),  # counters reset
        ([(0.0, 1000.0, 1000.0), (5.0, 9000.0, 2000.0)], 40.0, None),  # no longer read
        ([(2.0, 1000.0, 1000.0), (5.0, 9000.0, 2000.0)], 5.0, None),  # nothing read before the silence
    ],
)
def test_the_tunnels_byte_counters_say_whether_data_came_back(
    counters: list[tuple[float, float, float]], now: float, expected: bool | None
) -> None:
    """Received bytes beyond handshakes and keepalives since a silence began (at t=1) mean the
    tunnel carries data back; sent bytes with nothing back mean it does not."""
    assert tunnel_receiving(counters, 1.0, now, Tuning()) is expected
