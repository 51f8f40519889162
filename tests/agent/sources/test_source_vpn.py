"""The VPN source: tunnels found, classified and read; keys never leave the parser."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifeline_agent.netlink.rtnetlink import LinkInfo
from lifeline_agent.sources.vpn import OpenVpnInstance, Tunnel, VpnSource, classify

IFF = {"up": True, "lower": True}
SECRETS = (
    "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a",
    "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52",
)


def link(index: int, name: str, kind: str, arphrd: int = 65534, up: bool = True, **kw: Any) -> LinkInfo:
    return LinkInfo(index, name, kind, arphrd, up, up, "UP" if up else "DOWN", **kw)


LINKS = [
    link(1, "lo", "", 772),
    link(2, "eth0", "", 1),
    link(3, "wgdisp", "tun"),  # wireguard-go: a tun with a control socket
    link(4, "tun1", "tun", rx_bytes=5, tx_bytes=6),  # OpenVPN
    link(5, "ppp0", "ppp", 512, rx_bytes=1000, tx_bytes=2000),
    link(6, "tun7", "tun", up=False, rx_bytes=0, tx_bytes=0),
]


def test_classify() -> None:
    assert classify(link(1, "wg0", "wireguard"), False, False) == "wireguard"
    assert classify(link(1, "utun", "tun"), True, False) == "wireguard_userspace"
    assert classify(link(1, "tun0", "tun"), False, True) == "openvpn"
    assert classify(link(1, "ppp0", "", 512), False, False) == "ppp"
    assert classify(link(1, "ipsec0", "xfrm"), False, False) == "ipsec"
    assert classify(link(1, "tun9", "tun"), False, False) == "tun"


@pytest.fixture
def vpn(tmp_path: Path, fixtures: Path, uapi_server: Callable[[str, bytes], Any]) -> VpnSource:
    wg_dir = tmp_path / "wireguard"
    wg_dir.mkdir()
    uapi_server(str(wg_dir / "wgdisp.sock"), (fixtures / "wg_uapi_get_two_peers.txt").read_bytes())
    status = tmp_path / "client.status"
    status.write_bytes((fixtures / "openvpn_status_client.txt").read_bytes())
    links = list(LINKS)
    source = VpnSource(
        lambda: links,
        wg_dir=str(wg_dir),
        openvpn=[OpenVpnInstance(interface="tun1", status_files=(str(tmp_path / "*.status"),))],
        clock=lambda: 1717000000.25 + 30.0,
        wg_timeout=5.0,
    )
    source.test_links = links  # type: ignore[attr-defined]
    return source


def test_every_tunnel_read_by_its_kind(vpn: VpnSource, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        reading = vpn.read()
    assert reading.ok
    assert reading.facts is not None
    by_name = {t.interface: t for t in reading.facts.tunnels}
    assert set(by_name) == {"wgdisp", "tun1", "ppp0", "tun7"}
    assert by_name["wgdisp"] == Tunnel(
        interface="wgdisp",
        vpn_type="wireguard_userspace",
        link_up=True,
        up=True,
        handshake_age=30.0,
        endpoint="203.0.113.10:51820",
        rx_bytes=1929999999 + 2224,
        tx_bytes=1212111 + 38333,
        keepalive=25,
    )
    openvpn = by_name["tun1"]
    assert (openvpn.vpn_type, openvpn.up, openvpn.rx_bytes) == ("openvpn", None, 292359)
    assert "status file only" in openvpn.detail
    assert (by_name["ppp0"].vpn_type, by_name["ppp0"].up, by_name["ppp0"].tx_bytes) == ("ppp", True, 2000)
    assert (by_name["tun7"].vpn_type, by_name["tun7"].up) == ("tun", False)
    assert reading.facts.endpoints() == ("203.0.113.10",)
    samples = {
        (s.name, s.labels.get("interface"), s.labels.get("direction")): s.value for s in reading.samples
    }
    assert samples[("lifeline_vpn_handshake_age_seconds", "wgdisp", None)] == 30.0
    assert samples[("lifeline_vpn_interface_up", "wgdisp", None)] == 1.0
    assert samples[("lifeline_vpn_bytes_total", "wgdisp", "rx")] == 1929999999 + 2224
    assert ("lifeline_vpn_interface_up", "tun1", None) not in samples  # unknown is not "up"
    # The private and preshared keys went through the socket; they appear nowhere downstream.
    everything = repr(reading) + caplog.text
    for secret in SECRETS:
        assert secret not in everything


def test_stale_handshake_is_down_and_never_is_infinite(
    tmp_path: Path, fixtures: Path, uapi_server: Callable[[str, bytes], Any]
) -> None:
    uapi_server(str(tmp_path / "wgdisp.sock"), (fixtures / "wg_uapi_get_never.txt").read_bytes())
    source = VpnSource(lambda: [link(3, "wgdisp", "tun")], wg_dir=str(tmp_path), wg_timeout=5.0)
    reading = source.read()
    assert reading.facts is not None
    (tunnel,) = reading.facts.tunnels
    assert tunnel.handshake_age == math.inf
    assert tunnel.up is False
    assert ("lifeline_vpn_handshake_age_seconds", math.inf) in {(s.name, s.value) for s in reading.samples}


def test_unreadable_stack_is_unknown_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "wgdisp.sock").write_text("")  # a stale path, nobody listening
    source = VpnSource(lambda: [link(3, "wgdisp", "tun")], wg_dir=str(tmp_path))
    (tunnel,) = source.read().facts.tunnels  # type: ignore[union-attr]
    assert tunnel.vpn_type == "wireguard_userspace"
    assert tunnel.up is None
    assert tunnel.detail


def test_no_tunnel_is_a_valid_reading() -> None:
    reading = VpnSource(lambda: [link(2, "eth0", "", 1)]).read()
    assert reading.ok
    assert reading.facts is not None
    assert reading.facts.tunnels == ()
    assert not reading.facts.any_up


def test_events_on_tunnel_changes(vpn: VpnSource) -> None:
    links: list[LinkInfo] = vpn.test_links  # type: ignore[attr-defined]
    assert vpn.read().events == ()
    links[5] = link(6, "tun7", "tun", up=True, rx_bytes=0, tx_bytes=0)
    del links[4]  # ppp0 gone
    events = {(e.type, e.attributes["interface"]) for e in vpn.read().events}
    assert events == {("vpn.tunnel_up", "tun7"), ("vpn.tunnel_gone", "ppp0")}


def test_unnamed_openvpn_claims_a_tun_only_with_evidence(tmp_path: Path, fixtures: Path) -> None:
    absent = OpenVpnInstance(status_files=(str(tmp_path / "*.status"),))
    source = VpnSource(lambda: [link(4, "tun0", "tun")], openvpn=[absent])
    assert source.read().facts.tunnels[0].vpn_type == "tun"  # type: ignore[union-attr]
    (tmp_path / "c.status").write_bytes((fixtures / "openvpn_status_client.txt").read_bytes())
    assert source.read().facts.tunnels[0].vpn_type == "openvpn"  # type: ignore[union-attr]
