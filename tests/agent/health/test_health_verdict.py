"""Each layer broken alone is named, in the order a signal travels, in words a supervisor reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lifeline_agent.config import Target
from lifeline_agent.health import LayerStatus, PowerFacts, RouteFacts, WifiFacts
from lifeline_agent.health.attribution import pick_verdict
from lifeline_agent.health.layers import Tuning
from lifeline_wire.layers import CHAIN, LAYERS

Position = Any  # the simulated position from conftest.py


def test_layers_are_the_catalog_layers(position: Callable[..., Position]) -> None:
    assert tuple(s.layer for s in position(settle=0).model.evaluate().layers) == LAYERS


def test_no_data_is_not_healthy(position: Callable[..., Position]) -> None:
    from lifeline_agent.health import render_status

    pos = position(settle=0)
    a = pos.model.evaluate()
    assert (a.verdict_layer, a.verdict, a.verdict_state) == ("none", "no measurements yet", "unknown")
    assert all(s.state == "unknown" for s in a.layers)
    assert "CAD connection: UNKNOWN — no measurements yet" in render_status(a)
    (event,) = pos.model.events()  # the first verdict is announced, no layer changed
    assert (event.type, event.attributes["verdict"]) == ("health.verdict", "no measurements yet")


def test_a_settled_healthy_position_says_healthy(position: Callable[..., Position]) -> None:
    a = position().second()
    assert (a.verdict_layer, a.verdict) == ("none", "healthy")
    assert {s.layer: s.state for s in a.layers} == {layer: "ok" for layer in LAYERS}
    assert a.backup_ready is True
    assert a.risk == 0.0
    assert a.warning is None


def _break_probes(layer: str, how: str) -> Callable[[Position], None]:
    def apply(pos: Position) -> None:
        cond = pos.cond(layer)
        if how == "down":
            cond.down = True
        else:
            cond.refused = True

    return apply


def _fact(source: str, record: object) -> Callable[[Position], None]:
    def apply(pos: Position) -> None:
        pos.facts[source] = record

    return apply


CASES = [
    ("router", _break_probes("router", "down"), "home router unreachable"),
    ("internet", _break_probes("internet", "down"), "home internet (ISP) down, router fine"),
    ("vpn", _break_probes("vpn", "down"), "VPN tunnel down, internet fine"),
    ("agency", _break_probes("agency", "down"), "agency network unreachable through the tunnel"),
    ("dns", _break_probes("dns", "down"), "agency DNS not answering"),
    ("cad", _break_probes("cad", "down"), "CAD server not answering"),
    ("cad", _break_probes("cad", "refused"), "CAD server refusing connections"),
    (
        "power",
        _fact("power", PowerFacts(on_ac=False, percent=80.0, secs_left=9000.0)),
        "on battery — home power out",
    ),
    ("link", _fact("wifi", WifiFacts("wlan0", True, -78.0)), "Wi-Fi signal weak (−78 dBm)"),
    ("link", _fact("routes", RouteFacts("eth0", False, "usb0", True)), "home network link down (eth0)"),
    ("backup", _break_probes("backup", "down"), "hotspot not ready: hotspot has no internet — primary fine"),
]


@pytest.mark.parametrize(("layer", "breakage", "verdict"), CASES, ids=[c[2] for c in CASES])
def test_each_layer_broken_alone_is_named(
    position: Callable[..., Position], layer: str, breakage: Callable[[Position], None], verdict: str
) -> None:
    pos = position()
    breakage(pos)
    a = pos.run(25)[-1]
    assert a.verdict_layer == layer
    assert a.verdict == verdict
    if layer in CHAIN:
        before = CHAIN[: CHAIN.index(layer)]
        assert all(a.layer(name).state == "ok" for name in before), [a.layer(n) for n in before]
    assert a.layer(layer).state in ("degraded", "failed")


def test_router_down_fails_everything_behind_it_and_names_the_router(
    position: Callable[..., Position],
) -> None:
    pos = position()
    pos.cond("router").down = True
    a = pos.run(5)[-1]
    behind = ("router", "internet", "vpn", "agency", "dns", "cad")
    assert {name: a.layer(name).state for name in behind} == dict.fromkeys(behind, "failed")
    assert a.verdict == "home router unreachable"
    assert a.layer("backup").state == "ok"  # the hotspot does not go through the home router
    assert a.backup_ready is True


def test_home_vpn_router_tunnel_down_is_inferred(
    position: Callable[..., Position], home_router_targets: list[Target]
) -> None:
    pos = position(home_router_targets, vpn_facts=False)
    assert pos.history[-1].vpn_inferred
    assert pos.history[-1].layer("vpn").state == "ok"
    pos.cond("vpn").down = True  # the tunnel on the home router dies; router and ISP are fine
    a = pos.run(5)[-1]
    assert a.verdict_layer == "vpn"
    assert a.verdict == "VPN tunnel down (home VPN router)"
    assert a.layer("router").state == a.layer("internet").state == "ok"


def test_home_vpn_router_with_cad_alone_down_blames_cad(
    position: Callable[..., Position], home_router_targets: list[Target]
) -> None:
    pos = position(home_router_targets, vpn_facts=False)
    pos.cond("cad").refused = True
    a = pos.run(5)[-1]
    assert (a.verdict_layer, a.verdict) == ("cad", "CAD server refusing connections")
    assert a.layer("vpn").state == "ok"


def test_home_vpn_router_isp_down_is_not_blamed_on_the_tunnel(
    position: Callable[..., Position], home_router_targets: list[Target]
) -> None:
    pos = position(home_router_targets, vpn_facts=False)
    pos.cond("internet").down = True
    a = pos.run(5)[-1]
    assert a.verdict == "home internet (ISP) down, router fine"
    assert a.layer("vpn").state == "unknown"


def test_loss_upstream_explains_a_flaky_layer_behind_it(position: Callable[..., Position]) -> None:
    """Heavy ISP loss makes single-echo probes behind it miss rounds; the verdict names the ISP."""
    pos = position()
    pos.cond("internet").loss = 0.35
    verdicts = {a.verdict_layer for a in pos.run(60)[20:]}
    assert verdicts == {"internet"}


def test_home_power_out_names_power_not_the_dead_router(position: Callable[..., Position]) -> None:
    """The mains go: the laptop switches to battery as the router dies; the cause is the power."""
    pos = position()
    pos.facts["power"] = PowerFacts(on_ac=False, percent=90.0)
    pos.cond("router").down = True
    run = pos.run(8)
    assert {a.verdict_layer for a in run} == {"power"}
    assert run[-1].verdict == "on battery — home power out; home router unreachable"
    assert run[-1].layer("router").state == "failed"


def test_what_the_power_cut_took_down_stays_its_doing_until_it_is_back(
    position: Callable[..., Position],
) -> None:
    """The mains come back while the router still boots: still the power cut's doing (one page,
    not a new "router" one); once the router is back, a new router failure is the router's."""
    pos = position()
    pos.facts["power"] = PowerFacts(on_ac=False, percent=90.0)
    pos.cond("router").down = True
    assert pos.run(6)[-1].verdict_layer == "power"
    pos.facts["power"] = PowerFacts(on_ac=True, percent=90.0)  # mains back; the router still boots
    booting = pos.run(20)
    assert {a.verdict_layer for a in booting} == {"power"}
    assert booting[-1].verdict == "home power back, the home network still coming up; home router unreachable"
    pos.cond("router").down = False
    pos.run(25)  # the router answers again; every layer recovers after its hold
    assert pos.history[-1].verdict == "healthy"
    pos.cond("router").down = True  # a new failure, mains on all along
    a = pos.run(5)[-1]
    assert (a.verdict_layer, a.verdict) == ("router", "home router unreachable")


def test_on_battery_is_added_to_a_failure_it_does_not_explain(position: Callable[..., Position]) -> None:
    pos = position()
    pos.facts["power"] = PowerFacts(on_ac=False, percent=90.0)
    pos.run(5)
    pos.cond("cad").refused = True  # the agency's CAD server, not the home power
    a = pos.run(6)[-1]
    assert a.verdict == "CAD server refusing connections — on battery, home power out"


def test_running_on_the_backup_is_said(position: Callable[..., Position]) -> None:
    pos = position()
    pos.facts["routes"] = RouteFacts("wlan0", True, "usb0", True, on_backup=True)
    pos.cond("internet").down = True
    a = pos.run(6)[-1]
    assert a.on_backup
    assert a.verdict.endswith("— running on the backup path")


def test_a_dead_tunnel_over_the_hotspot_fails_while_the_cable_is_out(
    position: Callable[..., Position],
) -> None:
    """The primary's link is down (no carrier: judged from facts, it has no probes of its own) and
    the position moved to the hotspot, but the tunnel does not come up over it yet: CAD is lost, and
    the layers behind must fail — a link held failed is not "the layer ahead answering again"
    (the failover scenario paged only a warning for 12 s of lost CAD before this was right)."""
    pos = position()
    pos.facts["routes"] = RouteFacts("eth0", False, "usb0", True, on_backup=True)
    pos.cond("vpn").down = True
    a = pos.run(5)[-1]
    assert a.layer("link").state == "failed"
    assert a.layer("cad").state == "failed"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("broken", ["router", "internet", "vpn"])
def test_a_layer_behind_the_cut_is_never_judged_failed_first(
    position: Callable[..., Position], broken: str, seed: int
) -> None:
    """The layers behind a cut time out at whatever moment their own probes run. Probing the far
    side first each second (the worst order) and judging after every probe (as the agent does while
    probes fail), no layer behind the cut is ever failed before the cut layer, and the verdict never
    names one."""
    pos = position(seed=seed)
    pos.targets.reverse()
    pos.evaluate_every_probe = True
    pos.cond(broken).down = True
    behind = CHAIN[CHAIN.index(broken) + 1 :]
    pos.run(8)
    assert len(pos.between) == 8 * len(pos.targets)
    for a in pos.between:
        if a.layer(broken).state != "failed":
            assert all(a.layer(name).state != "failed" for name in behind), [a.layer(n) for n in behind]
        assert a.verdict_layer in ("none", broken), a.verdict
    assert pos.history[-1].verdict_layer == broken


def test_a_layer_behind_a_short_outage_fails_only_on_its_own_evidence(
    position: Callable[..., Position],
) -> None:
    """The ISP drops for two seconds and comes back; the tunnel stays down. Its failure counts only
    from the moment the ISP answered again, so it is named (once) after its own fail hold."""
    pos = position()
    pos.targets.reverse()
    pos.cond("internet").down = True
    pos.cond("vpn").down = True
    pos.run(2)  # shorter than the fail hold: the ISP is never judged failed
    pos.cond("internet").down = False
    recovered = pos.clock.time()
    run = pos.run(8)
    assert all(a.layer("internet").state == "ok" for a in run)
    first = next(a for a in run if a.layer("vpn").state == "failed")
    assert first.at - recovered >= Tuning().fail_hold
    assert run[-1].verdict == "VPN tunnel down, internet fine"


def test_loss_to_the_first_hop_is_the_home_network(position: Callable[..., Position]) -> None:
    pos = position()
    pos.cond("router").loss = 0.3  # Wi-Fi dropping frames between the laptop and the router
    run = pos.run(40)
    # Every probe behind the router loses packets too; the verdict names where it starts, always.
    assert {a.verdict_layer for a in run} - {"none"} == {"link"}
    a = run[-1]
    assert a.verdict_layer == "link"
    assert a.verdict.startswith("home network losing packets (")
    assert a.layer("router").state == "ok"


def test_delay_added_by_the_isp_is_not_blamed_on_the_tunnel(position: Callable[..., Position]) -> None:
    """A saturated uplink (bufferbloat) slows everything beyond it; the verdict names the ISP."""
    pos = position()
    # RTT to the ISP's host ~290 ms, just under the 300 ms critical band; through the tunnel ~305 ms.
    pos.cond("internet").delay = 0.275
    pos.cond("internet").noise = 0.003
    run = pos.run(40)
    assert run[-1].verdict_layer == "internet"
    assert run[-1].verdict.startswith("home internet (ISP) ")
    assert {a.verdict_layer for a in run} <= {"none", "internet"}


def test_bufferbloat_is_named_at_the_isp_before_the_60_s_rtt_hold(position: Callable[..., Position]) -> None:
    """An upload saturates the uplink: RTT jumps from ~15 ms to ~215 ms — under the 300 ms critical
    band, and the absolute 150 ms band needs 60 s — yet 14 times the usual is news in 15 s."""
    pos = position()
    pos.cond("internet").delay = 0.2
    pos.cond("internet").noise = 0.005
    run = pos.run(25)
    assert run[-1].verdict_layer == "internet"
    assert run[-1].verdict.startswith("home internet (ISP) slow (RTT ")
    assert "usually 15 ms" in run[-1].verdict
    assert {a.verdict_layer for a in run} <= {"none", "internet"}
    assert all(a.layer(name).state != "failed" for a in run for name in CHAIN)


def test_a_layer_is_not_down_while_traffic_crosses_it(position: Callable[..., Position]) -> None:
    """A burst of loss on the home Wi-Fi eats the router's one echo four rounds running while the
    probes behind it (which cross the router) get answers: the router is not down, nobody is paged."""
    pos = position()
    pos.unlucky.add("gw")
    run = pos.run(4)
    pos.unlucky.clear()
    run += pos.run(3)
    assert all(a.layer(name).state != "failed" for a in run for name in CHAIN), [
        (a.verdict_layer, a.verdict) for a in run
    ]
    # … and with nothing answering behind it, the same four rounds are an outage.
    pos = position()
    pos.cond("router").down = True
    assert pos.run(4)[-1].layer("router").state == "failed"


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_dns_queries_lost_to_a_lossy_home_link_are_loss_not_a_dns_outage(
    position: Callable[..., Position], seed: int
) -> None:
    """A DNS probe is one query a round: as Wi-Fi loss climbs, three queries in a row get lost while
    the multi-echo probes merely lose some echoes. That is packet loss, never "DNS not answering"
    (the lab's gradual ramp paged "agency DNS: agency-dns not answering" before this rule)."""
    pos = position(seed=seed)
    run = []
    for step in range(1, 9):
        pos.cond("router").loss = 0.45 * step / 8
        run += pos.run(5)
    broken = [a for a in run if a.verdict_layer != "none"]
    assert broken
    assert all("packets" in a.verdict for a in broken), {a.verdict for a in broken}
    assert all(a.layer("dns").state != "failed" for a in run)
    # … while a resolver that stops answering on a clean path is still a DNS outage.
    pos.clear()
    pos.run(80)  # the loss has left the one-minute window
    assert pos.history[-1].verdict == "healthy"
    pos.cond("dns").down = True
    a = pos.run(5)[-1]
    assert (a.verdict_layer, a.verdict_state) == ("dns", "failed")
    assert "not answering" in a.verdict


def test_failing_back_from_the_hotspot_is_not_a_home_network_outage(
    position: Callable[..., Position],
) -> None:
    """The primary drops and the system moves traffic to the hotspot: the home side is failed, CAD
    runs over the backup. When the primary returns and traffic moves back, the home side answers at
    once — the position must not read "home network down" (critical, a page) for the recovery hold
    while everything answers (the failover and power-loss lab scenarios paged at fail-back)."""
    pos = position()
    pos.facts["routes"] = RouteFacts("wlan0", False, "usb0", True, on_backup=True)
    pos.unlucky = {"gw", "isp"}  # the primary path's own probes get nothing back
    a = pos.run(20)[-1]
    assert a.on_backup
    assert [s.layer for s in a.layers if s.state == "failed"] == ["link", "router", "internet"]
    assert a.layer("cad").state == "ok"
    assert a.verdict.endswith("— running on the backup path")
    pos.facts["routes"] = RouteFacts("wlan0", True, "usb0", True, on_backup=False)
    pos.unlucky = set()
    back = pos.run(12)
    assert [s.layer for s in back[0].layers if s.state == "failed"] == []
    assert all(a.verdict_state != "failed" for a in back)


def test_a_home_outage_without_the_hotspot_still_serves_its_recovery_hold(
    position: Callable[..., Position],
) -> None:
    """The same outage with no failover (the position was cut off): one good round is not a
    recovery, the home side stays failed for the hold after it answers again."""
    pos = position()
    pos.facts["routes"] = RouteFacts("wlan0", False, "usb0", True, on_backup=False)
    pos.cond("router").down = True
    assert pos.run(10)[-1].layer("link").state == "failed"
    pos.facts["routes"] = RouteFacts("wlan0", True, "usb0", True, on_backup=False)
    pos.cond("router").down = False
    back = pos.run(14)
    hold = Tuning().recover_hold
    failed = [a for a in back if a.layer("link").state == "failed" or a.layer("router").state == "failed"]
    assert len(failed) >= hold - 1  # held for (about) the recovery hold: not released at once
    assert back[-1].verdict_state == "ok"


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        ("loss", ("link", "home network losing packets (4.2 %)", "loss")),
        ("latency", ("cad", "CAD server not answering", "down")),
    ],
)
def test_only_a_cause_that_explains_it_is_named_over_a_failure_further_along(
    cause: str, expected: tuple[str, str, str]
) -> None:
    """Loss on the home network explains CAD going silent behind it; a slow home network does not."""
    states = {layer: LayerStatus(layer, "ok", "fine", 0.0) for layer in LAYERS}
    states["link"] = LayerStatus("link", "degraded", "home network losing packets (4.2 %)", 0.0, cause)
    states["cad"] = LayerStatus("cad", "failed", "CAD server not answering", 0.0, "down")
    assert pick_verdict(states, on_backup=False, power_out=False, power_cut=False) == expected
