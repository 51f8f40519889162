"""The lab's VPN: real WireGuard (wireguard-go) between the laptop or the home router and the hub.

The client end lives in ``laptop`` (client VPN) or ``homerouter`` (router VPN); the hub end in
``vpnhub``. Keys are made fresh for every lab and never written to disk or shown.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

from lifeline_lab import procs
from lifeline_lab.errors import CommandFailed, LabError
from lifeline_lab.layout import ADDR

if TYPE_CHECKING:
    from lifeline_lab.topology import Lab

WG_PORT = 51820
WG_SOCKET_DIR = "/var/run/wireguard"


def bring_up(lab: Lab) -> None:
    """Start wireguard-go at both ends, key and address them, and wait for the first handshake."""
    keys = [subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)]  # fmt: skip
    pubs = [
        subprocess.run(["wg", "pubkey"], input=k, capture_output=True, text=True, check=True).stdout.strip()
        for k in keys
    ]
    client_key, hub_key = keys
    lab.wg_public_keys = {"client": pubs[0], "hub": pubs[1]}
    env = {"LOG_LEVEL": "error"}
    lab.popen(lab.wg_host, ["wireguard-go", "-f", lab.wg_client_if], name="wireguard-client", env=env)
    lab.popen("vpnhub", ["wireguard-go", "-f", lab.wg_hub_if], name="wireguard-hub", env=env)
    for ifname, name in ((lab.wg_client_if, "wireguard-client"), (lab.wg_hub_if, "wireguard-hub")):
        _wait_socket(lab, ifname, name)
    hub_allowed = f"{ADDR.tunnel_client}/32"
    if lab.vpn == "router":
        hub_allowed += f",{ADDR.lan_subnet}"
    hub_script = (
        f"set -e\nwg set {lab.wg_hub_if} private-key /dev/stdin listen-port {WG_PORT} "
        f"peer {pubs[0]} allowed-ips {hub_allowed}\n"
        f"ip addr add {ADDR.tunnel_hub}/24 dev {lab.wg_hub_if}\nip link set {lab.wg_hub_if} up\n"
    )
    client_script = (
        f"set -e\nwg set {lab.wg_client_if} private-key /dev/stdin "
        f"peer {pubs[1]} endpoint {ADDR.vpnhub_public}:{WG_PORT} "
        f"allowed-ips {ADDR.cad_subnet},{ADDR.tunnel_subnet} persistent-keepalive {lab.keepalive}\n"
        f"ip addr add {ADDR.tunnel_client}/24 dev {lab.wg_client_if}\n"
        f"ip link set {lab.wg_client_if} up\n"
    )
    procs.run_many(
        [
            (lab.ns("vpnhub"), ["sh", "-c", hub_script], hub_key + "\n"),
            (lab.ns(lab.wg_host), ["sh", "-c", client_script], client_key + "\n"),
        ]
    )
    lab.restore_routes(lab.wg_host)
    lab.restore_routes("vpnhub")
    wait_handshake(lab, 5.0)


def _wait_socket(lab: Lab, ifname: str, proc_name: str, timeout: float = 5.0) -> None:
    path = os.path.join(WG_SOCKET_DIR, f"{ifname}.sock")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if not lab.process_alive(proc_name):
            raise LabError(f"{proc_name} exited at start; see {lab.procs[proc_name].log}")
        if time.monotonic() > deadline:
            raise LabError(f"{proc_name}: no control socket {path} after {timeout:g}s")
        time.sleep(0.005)


def status(lab: Lab) -> dict[str, Any]:
    """The client end's handshake age, endpoint and byte counters (never a key)."""
    ns = lab.wg_host
    out: dict[str, Any] = {"interface": lab.wg_client_if, "namespace": lab.ns(ns)}
    try:
        hs = lab.exec(ns, ["wg", "show", lab.wg_client_if, "latest-handshakes"]).stdout.split()
        ep = lab.exec(ns, ["wg", "show", lab.wg_client_if, "endpoints"]).stdout.split()
        tr = lab.exec(ns, ["wg", "show", lab.wg_client_if, "transfer"]).stdout.split()
    except CommandFailed as exc:
        out["error"] = exc.stderr
        return out
    stamp = int(hs[1]) if len(hs) > 1 else 0
    out["latest_handshake"] = stamp
    out["handshake_age_s"] = (time.time() - stamp) if stamp else None
    out["endpoint"] = ep[1] if len(ep) > 1 else ""
    out["rx_bytes"] = int(tr[1]) if len(tr) > 2 else 0
    out["tx_bytes"] = int(tr[2]) if len(tr) > 2 else 0
    return out


def wait_handshake(lab: Lab, timeout: float) -> float:
    """Wait for the first WireGuard handshake; returns seconds waited."""
    t0 = time.monotonic()
    while True:
        found = status(lab)
        if found.get("latest_handshake"):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise LabError(f"no WireGuard handshake within {timeout:g}s: {found}")
        time.sleep(0.01)
