"""A real wireguard-go tunnel between two namespaces, read through its real control socket."""

from __future__ import annotations

import base64
import logging
import math
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lifeline_agent.netlink.rtnetlink import Netlink
from lifeline_agent.sources.vpn import Tunnel, VpnSource
from lifeline_agent.sources.wireguard import UAPI_DIR

pytestmark = [pytest.mark.lab, pytest.mark.system]  # namespaces, and wireguard-go processes


def run(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, input=stdin).stdout.strip()


def test_wireguard_go_handshake_read_through_the_socket(
    netns: Callable[[], str],
    wireguard_go: Callable[[str, str], None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    laptop, hub = netns(), netns()
    tag = secrets.token_hex(3)
    wg_laptop, wg_hub = f"wgl{tag}", f"wgh{tag}"
    run("ip", "link", "add", "eth0", "netns", laptop, "type", "veth", "peer", "name", "wan0", "netns", hub)
    run("ip", "-n", laptop, "addr", "add", "10.250.0.1/30", "dev", "eth0")
    run("ip", "-n", hub, "addr", "add", "10.250.0.2/30", "dev", "wan0")
    run("ip", "-n", laptop, "link", "set", "eth0", "up")
    run("ip", "-n", hub, "link", "set", "wan0", "up")

    keys = {}
    for side in ("laptop", "hub"):
        private = run("wg", "genkey")
        (tmp_path / f"{side}.key").write_text(private + "\n")
        (tmp_path / f"{side}.key").chmod(0o600)
        keys[side] = (private, run("wg", "pubkey", stdin=private + "\n"))

    wireguard_go(laptop, wg_laptop)
    wireguard_go(hub, wg_hub)
    run("wg", "set", wg_hub, "private-key", str(tmp_path / "hub.key"), "listen-port", "51820",
        "peer", keys["laptop"][1], "allowed-ips", "10.99.0.1/32")  # fmt: skip
    run("wg", "set", wg_laptop, "private-key", str(tmp_path / "laptop.key"),
        "peer", keys["hub"][1], "endpoint", "10.250.0.2:51820", "allowed-ips", "10.99.0.0/24")  # fmt: skip
    for ns, interface, address in ((laptop, wg_laptop, "10.99.0.1/24"), (hub, wg_hub, "10.99.0.2/24")):
        run("ip", "-n", ns, "addr", "add", address, "dev", interface)
        run("ip", "-n", ns, "link", "set", interface, "up")

    source = VpnSource(Netlink(laptop).links, wg_dir=UAPI_DIR, interfaces=[wg_laptop], wg_timeout=5.0)
    with caplog.at_level(logging.DEBUG):
        assert source.available().ok
        before = source.read()
        assert before.ok
        assert before.facts is not None
        (tunnel,) = before.facts.tunnels
        assert tunnel.vpn_type == "wireguard_userspace"
        assert tunnel.link_up
        assert tunnel.handshake_age == math.inf
        assert tunnel.up is False

        # A persistent keepalive set on a running device is sent at once and forces the handshake.
        run("wg", "set", wg_laptop, "peer", keys["hub"][1], "persistent-keepalive", "1")
        deadline = time.monotonic() + 10
        after = source.read()
        while not (after.facts and after.facts.tunnels[0].up) and time.monotonic() < deadline:
            time.sleep(0.05)
            after = source.read()

    assert after.facts is not None
    tunnel = after.facts.tunnels[0]
    assert tunnel == Tunnel(
        interface=wg_laptop,
        vpn_type="wireguard_userspace",
        link_up=True,
        up=True,
        handshake_age=tunnel.handshake_age,
        endpoint="10.250.0.2:51820",
        rx_bytes=tunnel.rx_bytes,
        tx_bytes=tunnel.tx_bytes,
        keepalive=1,
    )
    assert tunnel.handshake_age is not None
    assert 0 <= tunnel.handshake_age < 180
    assert tunnel.rx_bytes
    assert tunnel.tx_bytes
    assert [e.type for e in after.events] == ["vpn.tunnel_up"]

    # The socket returned the laptop's private key (hex); it is nowhere downstream.
    private_b64 = keys["laptop"][0]
    private_hex = base64.b64decode(private_b64).hex()
    downstream = repr(before) + repr(after) + caplog.text
    assert private_hex not in downstream
    assert private_b64 not in downstream
