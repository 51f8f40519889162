"""Routes to CAD: recorded kernel answers, the judgement, split DNS, and a real namespace."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifeline_agent.errors import SourceReadError
from lifeline_agent.netlink.rtnetlink import Netlink, RouteInfo, route_from_dump
from lifeline_agent.sources.dnsquery import DnsAnswer
from lifeline_agent.sources.routes import (
    CadRoute,
    CadRouteLog,
    RoutesSource,
    RoutesState,
    assess,
    server_address,
    split_dns_check,
)

PRIMARY = RouteInfo("default", "eth0", "192.168.1.1", metric=100)
BACKUP = RouteInfo("default", "usb0", "172.20.10.1", metric=600)


def test_route_get_answer_recorded(fixtures: Path) -> None:
    answer = json.loads((fixtures / "route_get.json").read_text())
    route = route_from_dump(answer, {3: "eth0"}, "192.168.1.77")
    assert route == RouteInfo("192.168.1.77", "eth0", "", "192.168.1.50", 0, 254)


def test_cad_through_the_tunnel_is_fine() -> None:
    state = assess(
        [PRIMARY, BACKUP],
        {"cad": ("10.20.0.10", RouteInfo("10.20.0.10", "wg0", prefsrc="10.99.0.2"))},
        {"wg0"},
        "usb0",
        [RouteInfo("203.0.113.10", "eth0", "192.168.1.1")],
    )
    (cad,) = state.cad
    assert (cad.via_tunnel, cad.misrouted) == (True, False)
    assert (state.on_backup, state.primary_interface, state.backup_interface) == (False, "eth0", "usb0")


def test_cad_outside_the_tunnel_is_misrouted() -> None:
    state = assess(
        [PRIMARY], {"cad": ("10.20.0.10", RouteInfo("10.20.0.10", "eth0", "192.168.1.1"))}, {"wg0"}, ""
    )
    assert [c.target for c in state.misrouted] == ["cad"]


def test_without_a_tunnel_nothing_is_misrouted() -> None:
    # The home-VPN-router variant: the laptop's CAD route leaves via the LAN, as it should.
    state = assess(
        [PRIMARY], {"cad": ("10.20.0.10", RouteInfo("10.20.0.10", "eth0", "192.168.1.1"))}, set(), ""
    )
    assert state.misrouted == ()


def test_unreachable_cad_is_not_misrouted() -> None:
    state = assess([], {"cad": ("10.20.0.10", None)}, {"wg0"}, "usb0")
    assert state.misrouted == ()
    assert state.cad[0].route is None


@pytest.mark.parametrize(
    ("defaults", "endpoint_via", "on_backup"),
    [
        ([PRIMARY, BACKUP], "eth0", False),
        ([BACKUP], "usb0", True),  # the primary default is gone
        ([PRIMARY, BACKUP], "usb0", True),  # the tunnel's underlay was moved to the hotspot
    ],
)
def test_on_backup(defaults: list[RouteInfo], endpoint_via: str, on_backup: bool) -> None:
    state = assess(
        defaults,
        {"cad": ("10.20.0.10", RouteInfo("10.20.0.10", "wg0"))},
        {"wg0"},
        "usb0",
        [RouteInfo("203.0.113.10", endpoint_via)],
    )
    assert state.on_backup is on_backup


def _answer(*addresses: str) -> Callable[[str], DnsAnswer]:
    return lambda name: DnsAnswer("NOERROR", addresses)


def _fails(name: str) -> DnsAnswer:
    raise SourceReadError("DNS server 10.0.0.2 did not answer within 1s")


def test_split_dns_check() -> None:
    ok = split_dns_check(
        "cad", "cad.agency.local", _answer("10.20.0.10"), _answer("10.20.0.10", "10.20.0.11")
    )
    assert ok.ok
    leaked = split_dns_check("cad", "cad.agency.local", _answer("10.20.0.10"), _answer("198.51.100.80"))
    assert not leaked.ok
    assert "198.51.100.80" in leaked.reason
    assert not split_dns_check("cad", "cad.agency.local", _fails, _answer("10.20.0.10")).ok
    system_down = split_dns_check("cad", "cad.agency.local", _answer("10.20.0.10"), _fails)
    assert not system_down.ok
    assert system_down.agency == ("10.20.0.10",)


def test_server_address_forms() -> None:
    assert server_address("10.0.0.53") == ("10.0.0.53", 53)
    assert server_address("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert server_address("[fd00::53]:5353") == ("fd00::53", 5353)
    assert server_address("fd00::53") == ("fd00::53", 53)


@pytest.mark.lab
@pytest.mark.system  # runs wireguard-go for the tunnel
def test_real_routes_misroute_backup_and_split_dns(
    netns: Callable[[], str],
    wireguard_go: Callable[[str, str], None],
    dns_server: Callable[[dict[str, list[str]]], Any],
) -> None:
    laptop, router, hotspot = netns(), netns(), netns()

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    ip("link", "add", "eth0", "netns", laptop, "type", "veth", "peer", "name", "lan0", "netns", router)
    ip("link", "add", "usb0", "netns", laptop, "type", "veth", "peer", "name", "lan0", "netns", hotspot)
    for ns, dev, addr in (
        (laptop, "eth0", "192.168.1.50/24"),
        (router, "lan0", "192.168.1.1/24"),
        (laptop, "usb0", "172.20.10.2/28"),
        (hotspot, "lan0", "172.20.10.1/28"),
    ):
        ip("-n", ns, "addr", "add", addr, "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
    ip("-n", laptop, "route", "add", "default", "via", "192.168.1.1", "dev", "eth0", "metric", "100")
    ip("-n", laptop, "route", "add", "default", "via", "172.20.10.1", "dev", "usb0", "metric", "600")
    tunnel = f"wgr{laptop[-6:]}"
    wireguard_go(laptop, tunnel)
    ip("-n", laptop, "addr", "add", "10.99.0.2/24", "dev", tunnel)
    ip("-n", laptop, "link", "set", tunnel, "up")
    ip("-n", laptop, "route", "add", "10.20.0.0/16", "dev", tunnel, "src", "10.99.0.2")

    agency = dns_server({"cad.agency.local": ["10.20.0.10"]})
    public = dns_server({"cad.agency.local": ["198.51.100.80"]})  # a home resolver without split DNS
    source = RoutesSource(
        Netlink(laptop),
        [("cad-tcp", "10.20.0.10"), ("cad-web", "cad.agency.local")],
        agency_resolvers=[agency.address],
        system_resolver=public.address,
        split_dns_interval=0.0,
    )
    assert source.available().ok
    first = source.read()
    assert first.ok, first.error
    state = first.facts
    assert state is not None
    assert state.tunnels == (tunnel,)
    assert {c.target: (c.route.interface if c.route else "", c.misrouted) for c in state.cad} == {
        "cad-tcp": (tunnel, False),
        "cad-web": (tunnel, False),  # routed by the agency's answer
    }
    assert state.cad[0].route is not None
    assert state.cad[0].route.prefsrc == "10.99.0.2"
    assert [(r.interface, r.metric) for r in state.defaults if ":" not in r.gateway] == [
        ("eth0", 100),
        ("usb0", 600),
    ]
    assert (state.on_backup, state.primary_interface, state.backup_interface) == (False, "eth0", "usb0")
    samples = {(s.name, s.labels.get("target")): s.value for s in first.samples}
    assert samples[("lifeline_vpn_split_dns_ok", "cad-web")] == 0.0
    assert samples[("lifeline_vpn_misrouted", "cad-tcp")] == 0.0
    assert samples[("lifeline_on_backup", None)] == 0.0

    # Someone adds a more specific route to CAD through the home router: CAD leaves in the clear.
    ip("-n", laptop, "route", "add", "10.20.0.10/32", "via", "192.168.1.1", "dev", "eth0")
    # And the primary default disappears: the position now runs on the hotspot.
    ip("-n", laptop, "route", "del", "default", "via", "192.168.1.1", "dev", "eth0")
    second = source.read()
    assert second.facts is not None
    # cad.agency.local is 10.20.0.10 too (the agency's answer), so both targets leave in the clear.
    assert [c.target for c in second.facts.misrouted] == ["cad-tcp", "cad-web"]
    assert second.facts.on_backup is True
    assert {e.type for e in second.events} == {"route.misrouted", "route.cad_changed", "route.on_backup"}
    assert ("lifeline_vpn_misrouted", "cad-tcp", 1.0) in {
        (s.name, s.labels.get("target"), s.value) for s in second.samples
    }


def test_without_an_agency_resolver_names_are_routed_but_not_judged(
    dns_server: Callable[[dict[str, list[str]]], Any],
) -> None:
    system = dns_server({"cad.agency.local": ["127.0.0.1"]})
    source = RoutesSource(Netlink(), [("cad-web", "cad.agency.local")], system_resolver=system.address)
    reading = source.read()
    assert reading.ok, reading.error
    assert reading.facts is not None
    assert reading.facts.split_dns == ()
    (cad,) = reading.facts.cad
    assert cad.address == "127.0.0.1"
    assert cad.route is not None
    assert cad.route.interface == "lo"
    assert "lifeline_vpn_split_dns_ok" not in {s.name for s in reading.samples}


def test_the_way_to_cad_is_said_once_and_again_when_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    def state(interface: str, source: str, misrouted: bool) -> RoutesState:
        route = RouteInfo("10.20.0.5", interface, prefsrc=source)
        cad = CadRoute("cad", "10.20.0.5", route, via_tunnel=not misrouted, misrouted=misrouted)
        return RoutesState((), (cad,), ("wg0",), "eth0", "", on_backup=False)

    routes = CadRouteLog()
    with caplog.at_level(logging.INFO, logger="lifeline_agent.sources.routes"):
        routes.update(state("wg0", "10.8.0.2", False))
        routes.update(state("wg0", "10.8.0.2", False))
        routes.update(state("eth0", "192.168.1.20", True))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "CAD cad (10.20.0.5) is reached via wg0 from 10.8.0.2"),
        (
            logging.WARNING,
            "CAD cad (10.20.0.5) is reached via eth0 from 192.168.1.20 — MIS-ROUTED outside the VPN tunnel",
        ),
    ]
