"""The home and the agency as data: roles, addresses, links, and the commands that build each namespace.

::

    laptop ─eth0 (primary)─ homerouter (NAT) ─wan0 (broadband)─┐
      │                                                       isp ─hub0 (hub)─ vpnhub ─lan0 (agency)─ cad
      └─usb0 (backup)─ hotspot (NAT, 100.64/10) ─wan0 (cellular)┘      203.0.113.10     10.20.0.10 CAD :7000
                                                                                         10.20.0.53 DNS :53
    client VPN: WireGuard laptop ⇄ vpnhub          router VPN: WireGuard homerouter ⇄ vpnhub

The CAD subnet is routed only through the tunnel; the ISP has no route to it and the VPN hub
refuses to forward from its public side to the agency LAN. Nothing here runs a command: ``Lab``
(``topology``) builds namespaces from these scripts.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("laptop", "homerouter", "hotspot", "isp", "vpnhub", "cad")
VPN_VARIANTS = ("client", "router")
CAD_PORT = 7000
CAD_NAME = "cad.agency.example"
LOAD_PORT = 9000


@dataclass(frozen=True, slots=True)
class Addresses:
    """Every address in the lab. The same in every lab: the namespaces keep them apart."""

    laptop_primary: str = "192.168.1.100"
    router: str = "192.168.1.1"
    laptop_backup: str = "192.168.42.100"
    hotspot: str = "192.168.42.1"
    router_wan: str = "198.51.100.2"
    isp_broadband: str = "198.51.100.1"
    hotspot_wan: str = "100.64.0.2"  # carrier-grade NAT range (RFC 6598)
    isp_cellular: str = "100.64.0.1"
    isp_hub: str = "203.0.113.1"
    vpnhub_public: str = "203.0.113.10"
    internet: str = "192.0.2.1"  # a public host on the ISP (internet reachability probes, load sink)
    vpnhub_lan: str = "10.20.0.1"
    cad_server: str = "10.20.0.10"
    dns: str = "10.20.0.53"
    cad_subnet: str = "10.20.0.0/24"
    tunnel_hub: str = "10.99.0.1"
    tunnel_client: str = "10.99.0.2"
    tunnel_subnet: str = "10.99.0.0/24"
    lan_subnet: str = "192.168.1.0/24"


ADDR = Addresses()


@dataclass(frozen=True, slots=True)
class LinkEnd:
    role: str
    ifname: str


@dataclass(frozen=True, slots=True)
class Link:
    """A point-to-point link. ``near`` is the end closer to the laptop: traffic "up" goes near → far."""

    name: str
    near: LinkEnd
    far: LinkEnd
    description: str


# (link, near role, near if, near address, far role, far if, far address, description)
VETHS: tuple[tuple[str, str, str, str, str, str, str, str], ...] = (
    ("primary", "laptop", "eth0", "192.168.1.100/24", "homerouter", "lan0", "192.168.1.1/24",
     "laptop ⇄ home router (home LAN / Wi-Fi)"),
    ("backup", "laptop", "usb0", "192.168.42.100/24", "hotspot", "lan0", "192.168.42.1/24",
     "laptop ⇄ cellular hotspot (USB tether)"),
    ("broadband", "homerouter", "wan0", "198.51.100.2/24", "isp", "bb0", "198.51.100.1/24",
     "home router ⇄ ISP (home broadband)"),
    ("cellular", "hotspot", "wan0", "100.64.0.2/10", "isp", "cg0", "100.64.0.1/10",
     "hotspot ⇄ ISP (LTE, carrier-grade NAT range)"),
    ("hub", "isp", "hub0", "203.0.113.1/24", "vpnhub", "wan0", "203.0.113.10/24",
     "internet ⇄ agency VPN concentrator"),
    ("agency", "vpnhub", "lan0", "10.20.0.1/24", "cad", "eth0", "10.20.0.10/24",
     "VPN concentrator ⇄ agency LAN (CAD, DNS)"),
)  # fmt: skip

FORWARDERS = ("homerouter", "hotspot", "isp", "vpnhub")
NAT = """table ip lifeline_nat {
  chain lab_post { type nat hook postrouting priority srcnat; policy accept; oifname "wan0" masquerade; }
}
"""
HUB_FILTER = """table inet lifeline_fw {
  chain lab_forward {
    type filter hook forward priority 0; policy accept; iifname "wan0" oifname "lan0" drop;
  }
}
"""


def veth_links() -> dict[str, Link]:
    """The point-to-point links between namespaces (the tunnel depends on the VPN variant)."""
    return {
        name: Link(name, LinkEnd(nr, nif), LinkEnd(fr, fif), desc)
        for name, nr, nif, _na, fr, fif, _fa, desc in VETHS
    }


def setup_script(role: str) -> str:
    """The shell script that gives one namespace its addresses, routes, sysctls and nftables rules."""
    lines = ["link set lo up"]
    for _link, nr, nif, na, fr, fif, fa, _d in VETHS:
        if nr == role:
            lines += [f"addr add {na} dev {nif}", f"link set {nif} up"]
        if fr == role:
            lines += [f"addr add {fa} dev {fif}", f"link set {fif} up"]
    if role == "cad":
        lines.append(f"addr add {ADDR.dns}/24 dev eth0")
    if role == "isp":
        lines.append(f"addr add {ADDR.internet}/32 dev lo")
    lines += [f"route replace {r}" for r in base_routes(role)]
    sysctls = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
    if role in FORWARDERS:
        sysctls.append("net.ipv4.ip_forward=1")
    if role == "laptop":
        sysctls.append("net.ipv4.ping_group_range=0 2147483647")
    script = "set -e\nip -batch - <<'EOF_IP'\n" + "\n".join(lines) + "\nEOF_IP\n"
    script += "".join(f"sysctl -qw '{s}'\n" for s in sysctls)
    nft = ""
    if role in ("homerouter", "hotspot"):
        nft += NAT
    if role == "vpnhub":
        nft += HUB_FILTER
    if nft:
        script += f"nft -f - <<'EOF_NFT'\n{nft}EOF_NFT\n"
    return script


def base_routes(role: str) -> list[str]:
    """The routes of a namespace that do not depend on the VPN variant."""
    if role == "laptop":
        return [
            f"default via {ADDR.router} dev eth0 metric 100",
            f"default via {ADDR.hotspot} dev usb0 metric 600",
        ]
    if role == "homerouter":
        return [f"default via {ADDR.isp_broadband} dev wan0"]
    if role == "hotspot":
        return [f"default via {ADDR.isp_cellular} dev wan0"]
    if role == "vpnhub":
        return [f"default via {ADDR.isp_hub} dev wan0"]
    if role == "cad":
        return [f"default via {ADDR.vpnhub_lan} dev eth0"]
    return []
