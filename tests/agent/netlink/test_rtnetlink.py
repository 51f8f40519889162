"""The raw rtnetlink reader: recorded kernel datagrams, pyroute2's decoding as the reference, the kernel."""

from __future__ import annotations

import errno
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from netlink_recordings import recorded_messages

from lifeline_agent.errors import SourceReadError, SourceUnavailable
from lifeline_agent.netlink.attributes import (
    NLMSG_ERROR,
    error_code,
    pack_attr,
    pack_message,
    split_attrs,
    split_messages,
)
from lifeline_agent.netlink.rtnetlink import (
    RTM_NEWLINK,
    RTM_NEWROUTE,
    LinkInfo,
    Netlink,
    RouteInfo,
    default_routes,
    link_dump,
    link_from_dump,
    route_dump,
    route_from_dump,
)


def _recorded(fixtures: Path, key: str) -> list[tuple[int, bytes, memoryview]]:
    return recorded_messages(fixtures / "rtnl_raw.json", key)


def test_recorded_link_dump(fixtures: Path) -> None:
    links = [
        link_from_dump(link_dump(p)) for kind, _, p in _recorded(fixtures, "link_dump") if kind == RTM_NEWLINK
    ]
    assert links == [
        LinkInfo(1, "lo", "", 772, True, True, "UNKNOWN", 0, 0, 0),
        LinkInfo(2, "eth0", "veth", 1, True, True, "UP", 2, 0, 180),
    ]
    assert [link.up for link in links] == [True, True]
    assert not any(link.is_tunnel for link in links)


def test_recorded_links_decode_as_pyroute2_decodes_them(fixtures: Path) -> None:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    for kind, message, payload in _recorded(fixtures, "link_dump"):
        if kind != RTM_NEWLINK:
            continue
        reference = ifinfmsg(message)
        reference.decode()
        assert link_from_dump(link_dump(payload)) == link_from_dump(reference.dump())


def test_recorded_route_dump_keeps_the_main_default(fixtures: Path) -> None:
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    dumped = [(route_dump(p), m) for kind, m, p in _recorded(fixtures, "route_dump") if kind == RTM_NEWROUTE]
    assert len(dumped) == 10  # main and local tables, both families
    for ours, message in dumped:  # every route reads as pyroute2 reads it
        reference = rtmsg(message)
        reference.decode()
        assert route_from_dump(ours, {1: "lo", 2: "eth0"}) == route_from_dump(
            reference.dump(), {1: "lo", 2: "eth0"}
        )
    defaults = [route_from_dump(d, {2: "eth0"}) for d in default_routes(d for d, _ in dumped)]
    assert defaults == [RouteInfo("default", "eth0", "192.168.1.1", "", 100, 254)]


def test_recorded_route_get_answers(fixtures: Path) -> None:
    ((kind, _, payload),) = _recorded(fixtures, "route_get_192.168.1.77")
    assert kind == RTM_NEWROUTE
    route = route_from_dump(route_dump(payload), {2: "eth0"}, "192.168.1.77")
    assert route == RouteInfo("192.168.1.77", "eth0", "", "192.168.1.50", 0, 254)
    ((kind, _, payload),) = _recorded(fixtures, "route_get_10.99.0.1_unreachable")
    assert (kind, error_code(payload)) == (NLMSG_ERROR, errno.ENETUNREACH)


def test_malformed_datagrams() -> None:
    whole = pack_message(RTM_NEWLINK, 0, 7, b"\0" * 16)
    assert [(k, s, len(p)) for k, _, s, p in split_messages(whole + whole)] == [
        (RTM_NEWLINK, 7, 16),
        (RTM_NEWLINK, 7, 16),
    ]
    with pytest.raises(ValueError, match="truncated netlink message at byte 32"):
        list(split_messages(whole + whole[:-4]))
    # An attribute claiming more bytes than are left ends the walk; what came before it is kept.
    attrs = pack_attr(3, b"eth0\0") + struct.pack("=HH", 40, 16) + b"\x06"
    assert {k: bytes(v) for k, v in split_attrs(memoryview(attrs)).items()} == {3: b"eth0\0"}


def test_one_socket_for_every_read_and_loopback_routes() -> None:
    netlink = Netlink()
    try:
        links = {link.name: link for link in netlink.links()}
        assert links["lo"].up
        sock = netlink._sock
        assert sock is not None
        defaults, chosen = netlink.routes(["127.0.0.1", "::1"])
        assert netlink._sock is sock  # kept open, not one socket per call
        assert all(r.dst == "default" and r.table == 254 for r in defaults)
        assert chosen["127.0.0.1"] is not None
        assert (chosen["127.0.0.1"].interface, chosen["127.0.0.1"].dst) == ("lo", "127.0.0.1")
        with pytest.raises(SourceReadError, match=r"route get cad\.agency: not an IP address"):
            netlink.routes(["cad.agency"])
        netlink.close()
        assert netlink._sock is None
        assert "lo" in {link.name for link in netlink.links()}  # opens again after close()
    finally:
        netlink.close()


@pytest.mark.lab
def test_a_namespace_read_from_outside(netns: Callable[[], str]) -> None:
    laptop, peer = netns(), netns()
    subprocess.run(
        ["ip", "link", "add", "eth0", "netns", laptop, "type", "veth", "peer", "name", "lan0", "netns", peer],
        check=True,
    )
    subprocess.run(["ip", "-n", laptop, "addr", "add", "192.168.1.50/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", laptop, "link", "set", "eth0", "up"], check=True)  # the peer stays down
    netlink = Netlink(laptop)
    try:
        links = {link.name: link for link in netlink.links()}
        assert set(links) == {"lo", "eth0"}
        assert (links["eth0"].kind, links["eth0"].admin_up, links["eth0"].lower_up) == ("veth", True, False)
        assert not links["eth0"].up
        assert _pyroute2_links(laptop) == sorted(netlink.links(), key=lambda link: link.index)
        defaults, chosen = netlink.routes(["10.99.0.1", "192.168.1.77"])
        assert defaults == []
        assert chosen["10.99.0.1"] is None  # no route at all: network unreachable
        route = chosen["192.168.1.77"]
        assert route is not None
        assert (route.interface, route.prefsrc) == ("eth0", "192.168.1.50")
    finally:
        netlink.close()


def _pyroute2_links(netns: str) -> list[LinkInfo]:
    from pyroute2 import IPRoute

    with IPRoute(netns=netns, flags=0) as ipr:
        dumped: list[Any] = [m.dump() for m in ipr.get_links()]
    return sorted((link_from_dump(d) for d in dumped), key=lambda link: link.index)


@pytest.mark.lab
def test_an_absent_namespace_is_unavailable() -> None:
    netlink = Netlink("llsrc-absent-namespace")
    with pytest.raises(SourceUnavailable, match="rtnetlink in netns llsrc-absent-namespace"):
        netlink.links()
