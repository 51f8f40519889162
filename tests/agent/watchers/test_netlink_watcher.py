"""Netlink events: recorded rtnetlink messages, and a real veth whose cable is pulled."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline_agent.sources.errors import SourceUnavailable
from lifeline_agent.watchers.netlink import NetlinkEvent, NetlinkWatcher, event_from_message

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "netlink_events.json").read_text())["messages"]
NAMES = {2: "lan0", 3: "eth0"}


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
