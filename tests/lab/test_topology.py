"""The lab's topology: both VPN variants come up, CAD only through the tunnel, nothing left behind."""

from __future__ import annotations

import os
import shutil

import pytest

from lifeline_lab import impair, wireguard
from lifeline_lab.errors import LabStateError
from lifeline_lab.layout import ADDR, ROLES
from lifeline_lab.measure import fping
from lifeline_lab.testing import leftovers, require_lab, unique_prefix
from lifeline_lab.topology import Lab, list_namespaces

pytestmark = pytest.mark.lab


def route_get(lab: Lab, ns: str, dst: str) -> str:
    return lab.exec(ns, ["ip", "-o", "route", "get", dst]).stdout


def test_client_variant_reaches_cad_through_the_tunnel(lab: Lab) -> None:
    assert set(lab.namespaces.values()) <= set(list_namespaces())
    assert "build_s" in lab.timings
    assert "wireguard_s" in lab.timings
    route = route_get(lab, "laptop", ADDR.cad_server)
    assert f"dev {lab.wg_client_if}" in route
    assert f"src {ADDR.tunnel_client}" in route
    assert fping(lab, "laptop", ADDR.cad_server, count=10).loss == 0.0
    assert fping(lab, "laptop", ADDR.dns, count=5).loss == 0.0
    # The rest of the world has no way in: not the ISP, not the home router.
    assert fping(lab, "isp", ADDR.cad_server, count=3, timeout_ms=300).loss == 1.0
    assert fping(lab, "homerouter", ADDR.cad_server, count=3, timeout_ms=300).loss == 1.0
    status = wireguard.status(lab)
    assert status["latest_handshake"] > 0
    assert status["endpoint"] == f"{ADDR.vpnhub_public}:51820"


def test_laptop_routes_and_unprivileged_icmp(lab: Lab) -> None:
    routes = lab.exec("laptop", ["ip", "route", "show", "default"]).stdout
    assert f"default via {ADDR.router} dev eth0 metric 100" in routes
    assert f"default via {ADDR.hotspot} dev usb0 metric 600" in routes
    group_range = lab.exec("laptop", ["sysctl", "-n", "net.ipv4.ping_group_range"]).stdout.split()
    assert group_range == ["0", "2147483647"]
    if shutil.which("setpriv") and os.path.exists("/usr/bin/python3"):
        code = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)"
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", code]
        assert lab.exec("laptop", argv, check=False).returncode == 0


def test_cad_is_unreachable_with_the_tunnel_down(lab: Lab) -> None:
    impair.apply(lab, impair.make("link-down", "tunnel"))
    try:
        assert fping(lab, "laptop", ADDR.cad_server, count=5, timeout_ms=300).loss == 1.0
        assert fping(lab, "laptop", ADDR.internet, count=5).loss == 0.0  # the internet still works
    finally:
        impair.clear(lab)
    assert f"dev {lab.wg_client_if}" in route_get(lab, "laptop", ADDR.cad_server)
    assert fping(lab, "laptop", ADDR.cad_server, count=5).loss == 0.0


def test_router_variant_runs_beside_the_client_lab(lab: Lab, router_lab: Lab) -> None:
    assert not set(lab.namespaces.values()) & set(router_lab.namespaces.values())
    links = router_lab.exec("laptop", ["ip", "-o", "link"]).stdout
    assert "wg-" not in links  # the laptop sees only its LAN
    assert "dev eth0" in route_get(router_lab, "laptop", ADDR.cad_server)
    assert wireguard.status(router_lab)["namespace"] == router_lab.ns("homerouter")
    assert fping(router_lab, "laptop", ADDR.cad_server, count=10).loss == 0.0
    assert fping(lab, "laptop", ADDR.cad_server, count=10).loss == 0.0
    impair.apply(router_lab, impair.make("link-down", "tunnel"))
    try:
        assert fping(router_lab, "laptop", ADDR.cad_server, count=5, timeout_ms=300).loss == 1.0
        assert fping(lab, "laptop", ADDR.cad_server, count=5).loss == 0.0  # the other lab is untouched
    finally:
        impair.clear(router_lab)
    assert fping(router_lab, "laptop", ADDR.cad_server, count=5).loss == 0.0


def test_attach_sees_the_running_lab(lab: Lab) -> None:
    other = Lab.attach(lab.prefix)
    assert other.namespaces == lab.namespaces
    assert set(other.procs) == set(lab.procs) >= {"wireguard-client", "wireguard-hub"}
    assert other.status()["namespaces"] == {role: (lab.ns(role), True) for role in ROLES}
    with pytest.raises(LabStateError, match="already up"):
        Lab(lab.prefix).up()


def test_teardown_leaves_nothing_behind() -> None:
    require_lab()
    lab = Lab(unique_prefix("d"), "client", cadsim=True)
    lab.up()
    try:
        impair.apply(lab, impair.make("delay", "primary", "up", delay_ms=10))  # starts delayd
        started = dict(lab.procs)
        assert {"wireguard-client", "wireguard-hub", "cad-server", "dns-server", "cad-client",
                "delayd-homerouter"} <= set(started)  # fmt: skip
    finally:
        lab.down()
    lab.procs = started
    assert leftovers(lab) == []
    assert "teardown_s" in lab.timings


def test_bad_prefix_and_variant_are_refused() -> None:
    with pytest.raises(LabStateError, match="prefix"):
        Lab("Bad_Prefix")
    with pytest.raises(LabStateError, match="vpn"):
        Lab("ok-", "openvpn")
