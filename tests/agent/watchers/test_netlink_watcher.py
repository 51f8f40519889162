"""Netlink events: recorded rtnetlink messages (decoded pyroute2's way and by the raw reader the
watcher uses), and a real veth whose cable is pulled."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netlink_recordings import recorded_messages

from lifeline_agent.errors import SourceUnavailable
from lifeline_agent.watchers import netlink as netlink_module
from lifeline_agent.watchers.netlink import (
    NetlinkEvent,
    NetlinkWatcher,
    decode_message,
    event_from_message,
)

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = json.loads((FIXTURES / "netlink_events.json").read_text())["messages"]
NAMES = {2: "lan0", 3: "eth0"}


RAW = recorded_messages(FIXTURES / "netlink_raw.json", "datagrams")


def test_recorded_messages_become_events() -> None:
    events = [event_from_message(m, NAMES, 1.0) for m in RECORDED]
    kept = [
        (
            e.type,
            e.interface,
            e.attributes.get("oper_state") or e.attributes.get("dst") or e.attributes.get("address"),
        )
        for e in events
        if e
    ]
    assert kept[:6] == [
        ("netlink.link_down", "lan0", "DOWN"),
        ("netlink.link_down", "eth0", "DOWN"),
        ("netlink.link_down", "eth0", "LOWERLAYERDOWN"),  # admin up, peer still down: no carrier
        # Carrier is back (LOWER_UP) but the kernel has not moved operstate yet: still down.
        ("netlink.link_down", "lan0", "LOWERLAYERDOWN"),
        ("netlink.link_up", "lan0", "UP"),
        ("netlink.link_up", "eth0", "UP"),
    ]
    assert ("netlink.address_added", "eth0", "192.168.1.50/24") in kept
    assert ("netlink.route_added", "eth0", "192.168.1.0/24") in kept
    assert ("netlink.route_added", "eth0", "default") in kept
    assert ("netlink.link_removed", "eth0", "DOWN") in kept
    # Local-table routes (the address's own /32, broadcast) are not path decisions: dropped.
    assert not any(k[2] in ("192.168.1.50/32", "192.168.1.255/32") for k in kept)
    # The recording shows the kernel never announced removing the default route when eth0 went down.
    assert ("netlink.route_removed", "eth0", "default") not in kept


def test_link_event_attributes_and_source_event() -> None:
    down = next(m for m in RECORDED if m["event"] == "RTM_NEWLINK" and m["flags"] == 4099)
    event = event_from_message(down, NAMES, 2.5)
    assert event == NetlinkEvent(
        "link",
        "down",
        "eth0",
        {
            "admin_up": True,
            "carrier": False,
            "oper_state": "LOWERLAYERDOWN",
            "carrier_changes": event.attributes["carrier_changes"],
        },  # type: ignore[union-attr]
        2.5,
    )
    source_event = event.to_source_event()  # type: ignore[union-attr]
    assert source_event.type == "netlink.link_down"
    assert source_event.attributes["interface"] == "eth0"
    assert event_from_message({"event": "RTM_NEWNEIGH"}, NAMES) is None


def test_raw_messages_decode_as_pyroute2_decodes_them() -> None:
    """Every recorded datagram, read by the watcher's reader and by pyroute2, gives the same event,
    the same link state and the same route identity."""
    from pyroute2.netlink.rtnl import RTM_VALUES
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    reference_class: dict[int, Any] = {
        16: ifinfmsg,
        17: ifinfmsg,
        20: ifaddrmsg,
        21: ifaddrmsg,
        24: rtmsg,
        25: rtmsg,
    }
    assert {kind for kind, _, _ in RAW} == set(reference_class)  # every kind the watcher reads was recorded
    names = {2: "eth0"}
    for kind, message, payload in RAW:
        reference = reference_class[kind](message)
        reference.decode()
        theirs = reference.dump() | {"event": RTM_VALUES[kind]}
        ours = decode_message(kind, payload)
        assert ours is not None
        assert event_from_message(ours, names, 3.0) == event_from_message(theirs, names, 3.0)
        if kind in (16, 17):
            assert netlink_module.link_state(ours) == netlink_module.link_state(theirs)
        if kind in (24, 25):
            assert netlink_module.route_key(ours) == netlink_module.route_key(theirs)


def test_raw_recording_becomes_the_events_of_the_scenario() -> None:
    events = [
        event_from_message(decode_message(kind, payload) or {}, {2: "eth0"}, 1.0) for kind, _, payload in RAW
    ]
    kept = [
        (e.type, e.attributes.get("dst") or e.attributes.get("address") or e.attributes.get("carrier"))
        for e in events
        if e
    ]
    assert {e.interface for e in events if e} == {"eth0"}
    assert kept == [
        ("netlink.link_down", False),  # created: admin down
        ("netlink.address_added", "192.168.1.50/24"),
        ("netlink.address_added", "2001:db8:1::50/64"),
        ("netlink.link_down", False),  # admin up, the peer still down: no carrier
        ("netlink.route_added", "192.168.1.0/24"),
        ("netlink.route_added", "2001:db8:1::/64"),
        ("netlink.route_added", "fe80::/64"),
        ("netlink.link_up", True),  # the peer is up
        ("netlink.route_added", "default"),
        ("netlink.route_added", "default"),
        ("netlink.link_down", False),  # the cable is pulled at the router
        ("netlink.link_up", True),
        ("netlink.link_down", False),  # admin down: IPv6 routes announced gone, IPv4 ones not
        ("netlink.route_removed", "2001:db8:1::/64"),
        ("netlink.route_removed", "fe80::/64"),
        ("netlink.route_removed", "default"),
        ("netlink.address_removed", "2001:db8:1::50/64"),
        ("netlink.address_removed", "fe80::1466:b3ff:fe98:5361/64"),
        ("netlink.address_removed", "192.168.1.50/24"),
        ("netlink.link_removed", False),
    ]
    routes = [e for e in events if e and e.kind == "route" and e.attributes["dst"] == "default"]
    assert [(e.action, e.attributes["family"], e.attributes.get("gateway")) for e in routes] == [
        ("added", "ipv4", "192.168.1.1"),
        ("added", "ipv6", "2001:db8:1::1"),
        ("removed", "ipv6", "2001:db8:1::1"),  # the IPv4 default vanished silently: the watcher looks
    ]
    # A message the watcher does not subscribe to, and one too short for its header.
    assert decode_message(28, memoryview(b"\0" * 12)) is None  # RTM_NEWNEIGH
    with pytest.raises(ValueError, match="RTM_NEWADDR of 4 bytes"):
        decode_message(20, memoryview(b"\0" * 4))


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces (laptop, router), deleted at the end with everything in them."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")
    names = [f"llw-{os.getpid()}-{secrets.token_hex(3)}" for _ in range(2)]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        yield names[0], names[1]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


class Collector:
    def __init__(self) -> None:
        self.events: list[NetlinkEvent] = []
        self.changed = threading.Condition()

    def __call__(self, event: NetlinkEvent) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, predicate: object, timeout: float = 5.0) -> NetlinkEvent:
        assert callable(predicate)
        with self.changed:
            found = self.changed.wait_for(
                lambda: next((e for e in self.events if predicate(e)), None), timeout
            )
        assert found is not None, f"no matching event in {self.events}"
        return found


@pytest.mark.lab
def test_cable_pull_and_silent_route_loss_arrive_as_events(namespaces: tuple[str, str]) -> None:
    laptop, router = namespaces

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    ip("link", "add", "eth0", "netns", laptop, "type", "veth", "peer", "name", "lan0", "netns", router)
    ip("-n", laptop, "addr", "add", "192.168.1.50/24", "dev", "eth0")
    ip("-n", laptop, "link", "set", "eth0", "up")
    ip("-n", router, "link", "set", "lan0", "up")
    ip("-n", laptop, "route", "add", "default", "via", "192.168.1.1", "dev", "eth0", "metric", "100")

    seen = Collector()
    watcher = NetlinkWatcher(seen, netns=laptop)
    watcher.start()
    try:
        assert watcher.running
        ip("-n", router, "link", "set", "lan0", "down")  # the cable is pulled at the router
        pulled = seen.wait_for(lambda e: e.type == "netlink.link_down" and e.interface == "eth0")
        assert pulled.attributes["carrier"] is False
        assert pulled.attributes["admin_up"] is True

        ip("-n", laptop, "link", "set", "eth0", "down")  # admin down: the kernel drops the routes
        gone = seen.wait_for(
            lambda e: e.type == "netlink.route_removed" and e.attributes.get("dst") == "default"
        )
        assert gone.interface == "eth0"
        assert gone.attributes["gateway"] == "192.168.1.1"

        ip("-n", laptop, "addr", "add", "10.1.1.1/24", "dev", "eth0")
        seen.wait_for(
            lambda e: e.type == "netlink.address_added" and e.attributes["address"] == "10.1.1.1/24"
        )
    finally:
        watcher.stop()
    assert not watcher.running


def test_missing_namespace_is_unavailable() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    watcher = NetlinkWatcher(lambda e: None, netns=f"llw-absent-{secrets.token_hex(3)}")
    with pytest.raises(SourceUnavailable, match="netlink watcher in netns"):
        watcher.start()
    assert not watcher.running


@pytest.mark.lab
def test_lost_notifications_are_made_up_by_reading_the_routes_again(
    namespaces: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst larger than the receive buffer while the thread is busy: the kernel drops messages
    and says so (ENOBUFS); the watcher reads the table again and reports what it did not hear."""
    laptop, router = namespaces

    def ip(*argv: str, stdin: str | None = None) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, input=stdin, text=True)

    ip("link", "add", "eth0", "netns", laptop, "type", "veth", "peer", "name", "lan0", "netns", router)
    ip("-n", laptop, "addr", "add", "192.168.1.50/24", "dev", "eth0")
    ip("-n", laptop, "link", "set", "eth0", "up")
    ip("-n", router, "link", "set", "lan0", "up")
    monkeypatch.setattr(netlink_module, "RCVBUF", 1)  # the kernel's minimum: a few messages

    gate, busy = threading.Event(), threading.Event()
    seen = Collector()

    def slow(event: NetlinkEvent) -> None:
        busy.set()
        gate.wait(10)  # the thread is held here while the burst arrives
        seen(event)

    watcher = NetlinkWatcher(slow, netns=laptop)
    watcher.start()
    try:
        ip("-n", laptop, "route", "add", "10.200.0.0/24", "via", "192.168.1.1")
        assert busy.wait(5)
        burst = [f"route add 10.200.{n}.0/24 via 192.168.1.1" for n in range(1, 201)]
        ip("-n", laptop, "-batch", "-", stdin="\n".join(burst) + "\n")
        gate.set()
        wanted = {f"10.200.{n}.0/24" for n in range(201)}

        def reported() -> set[str]:
            return {str(e.attributes["dst"]) for e in seen.events if e.type == "netlink.route_added"}

        seen.wait_for(lambda e: wanted <= reported())
        assert any(e.synthesized for e in seen.events if e.type == "netlink.route_added")
        assert watcher.running  # the overflow did not end the watcher
    finally:
        gate.set()
        watcher.stop()
    assert not watcher.running
