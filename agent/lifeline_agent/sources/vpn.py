"""VPN tunnels on the laptop: found, classified, and read without keeping a key.

Tunnel interfaces come from rtnetlink (kind ``wireguard``/``tun``/``ppp``/``xfrm``, or a
link type without a hardware header). Each is classified and read:

=====================  ======================================================  =====================
vpn_type               how it is read                                          privilege
=====================  ======================================================  =====================
wireguard              kernel module over generic netlink (pyroute2)           CAP_NET_ADMIN
wireguard_userspace    control socket ``/var/run/wireguard/<if>.sock``         root / socket group
openvpn                management interface, else the ``--status`` file        per their permissions
tun, ppp, ipsec        link state and counters only                            none
=====================  ======================================================  =====================

No tunnel at all is a valid reading (the home-VPN-router variant): the health model then infers
the tunnel from what is reachable.
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError, SourceUnavailable
from lifeline_agent.netlink.rtnetlink import ARPHRD_PPP, LinkInfo, Netlink
from lifeline_agent.sources.base import (
    IS_LINUX,
    Availability,
    Reading,
    Source,
    SourceEvent,
    SourceSample,
    not_linux,
    sample,
)
from lifeline_agent.sources.openvpn import Management, OpenVpnReport, read_status_file
from lifeline_agent.sources.registry import SourceSpec, register
from lifeline_agent.sources.wireguard import UAPI_DIR, WgDevice, kernel_get, uapi_get, uapi_socket

VPN_TYPES = ("wireguard", "wireguard_userspace", "openvpn", "tun", "ppp", "ipsec")
# Where distributions let OpenVPN write --status files; globbed on every read.
DEFAULT_STATUS_FILES = (
    "/run/openvpn/*.status",
    "/run/openvpn-client/*.status",
    "/run/openvpn-client/*.log",
    "/var/log/openvpn/openvpn-status.log",
    "/etc/openvpn/openvpn-status.log",
)


@dataclass(frozen=True, slots=True)
class OpenVpnInstance:
    interface: str = ""  # "" = the tun interface that is neither WireGuard nor claimed by another
    management: str = ""  # "host:port" or a UNIX socket path
    password: str = field(default="", repr=False)
    status_files: tuple[str, ...] = ()  # paths or glob patterns; the first fresh one is read

    def found_status_files(self) -> list[str]:
        return [path for pattern in self.status_files for path in sorted(glob.glob(pattern))]

    @property
    def evident(self) -> bool:
        """Configured explicitly, or an OpenVPN status file exists: enough to call a tun OpenVPN."""
        return bool(self.interface or self.management or self.found_status_files())


@dataclass(frozen=True, slots=True)
class Tunnel:
    """One VPN tunnel interface as the kernel and its VPN stack report it (the health model draws
    its one VPN fact, ``health.facts.VpnFacts``, from all of them)."""

    interface: str
    vpn_type: str
    link_up: bool
    up: bool | None  # None: the VPN stack could not be read (``detail`` says why)
    handshake_age: float | None = None  # WireGuard: seconds since the newest handshake; inf = never
    endpoint: str = ""  # WireGuard peer / OpenVPN server, "ip:port"
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    state: str = ""  # OpenVPN: CONNECTED, RECONNECTING, …
    keepalive: int | None = None  # WireGuard persistent keepalive (0 = off: handshake age means little)
    detail: str = ""

    @property
    def endpoint_host(self) -> str:
        host = self.endpoint.rpartition(":")[0] if ":" in self.endpoint else self.endpoint
        return host.strip("[]")


@dataclass(frozen=True, slots=True)
class VpnState:
    tunnels: tuple[Tunnel, ...] = ()

    @property
    def any_up(self) -> bool:
        return any(t.up for t in self.tunnels)

    def endpoints(self) -> tuple[str, ...]:
        """Public addresses of the VPN concentrators, for route checks and backup probes."""
        return tuple(dict.fromkeys(t.endpoint_host for t in self.tunnels if t.endpoint_host))

    def interfaces(self) -> tuple[str, ...]:
        return tuple(t.interface for t in self.tunnels)


def classify(link: LinkInfo, has_uapi_socket: bool, openvpn_claim: bool) -> str:
    if link.kind == "wireguard":
        return "wireguard"
    if has_uapi_socket:
        return "wireguard_userspace"
    if openvpn_claim:
        return "openvpn"
    if link.kind == "ppp" or link.arphrd == ARPHRD_PPP:
        return "ppp"
    if link.kind in ("vti", "vti6", "xfrm"):
        return "ipsec"
    return "tun"


def wireguard_facts(
    link: LinkInfo, vpn_type: str, device: WgDevice, now: float, critical_age: float
) -> Tunnel:
    latest = device.latest
    age = math.inf
    if latest is not None and latest.last_handshake is not None:
        age = max(0.0, now - latest.last_handshake)
    return Tunnel(
        interface=link.name,
        vpn_type=vpn_type,
        link_up=link.up,
        # Keys are rejected 180 s after a handshake: past that the tunnel cannot carry data.
        up=link.up and age <= critical_age,
        handshake_age=age,
        endpoint=latest.endpoint if latest else "",
        rx_bytes=device.rx_bytes,
        tx_bytes=device.tx_bytes,
        keepalive=latest.keepalive if latest else None,
    )


def openvpn_facts(link: LinkInfo, report: OpenVpnReport) -> Tunnel:
    state = report.state
    return Tunnel(
        interface=link.name,
        vpn_type="openvpn",
        link_up=link.up,
        # Without the management interface the state is unknown (persist-tun keeps the link up).
        up=(link.up and state.connected) if state is not None else None,
        endpoint=state.remote if state else "",
        rx_bytes=report.status.rx_bytes if report.status else None,
        tx_bytes=report.status.tx_bytes if report.status else None,
        state=state.state if state else "",
        detail="" if state else "state unknown: read from the status file only",
    )


class VpnSource:
    name = "vpn"

    def __init__(
        self,
        links: Callable[[], list[LinkInfo]],
        *,
        wg_dir: str = UAPI_DIR,
        openvpn: Sequence[OpenVpnInstance] = (),
        interfaces: Sequence[str] = (),
        handshake_critical: float = 180.0,
        wg_timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._links = links
        self.wg_dir = wg_dir
        self.openvpn = tuple(openvpn)
        self.interfaces = tuple(interfaces)  # only these; empty = every tunnel found
        self.handshake_critical = handshake_critical
        self.wg_timeout = wg_timeout
        self.clock = clock
        self._last: dict[str, Tunnel] | None = None
        self.last_state: VpnState | None = None

    def available(self) -> Availability:
        try:
            self._links()
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def _claims(self, tunnels: list[LinkInfo], userspace: set[str]) -> dict[str, OpenVpnInstance]:
        claims: dict[str, OpenVpnInstance] = {}
        unnamed = [i for i in self.openvpn if not i.interface and i.evident]
        for inst in self.openvpn:
            if inst.interface:
                claims[inst.interface] = inst
        free = [
            t.name for t in tunnels if t.kind == "tun" and t.name not in userspace and t.name not in claims
        ]
        for inst, name in zip(unnamed, free, strict=False):
            claims[name] = inst
        return claims

    def _tunnel(self, link: LinkInfo, userspace: set[str], claims: Mapping[str, OpenVpnInstance]) -> Tunnel:
        vpn_type = classify(link, link.name in userspace, link.name in claims)
        try:
            if vpn_type == "wireguard":
                device = kernel_get(link.name)
                return wireguard_facts(link, vpn_type, device, self.clock(), self.handshake_critical)
            if vpn_type == "wireguard_userspace":
                device = uapi_get(uapi_socket(link.name, self.wg_dir), self.wg_timeout)
                return wireguard_facts(link, vpn_type, device, self.clock(), self.handshake_critical)
            if vpn_type == "openvpn":
                return openvpn_facts(link, _read_openvpn(claims[link.name]))
        except SourceError as exc:
            return Tunnel(link.name, vpn_type, link.up, None, detail=exc.reason)
        return Tunnel(link.name, vpn_type, link.up, link.up, rx_bytes=link.rx_bytes, tx_bytes=link.tx_bytes)

    def read(self) -> Reading[VpnState]:
        try:
            links = self._links()
        except SourceError as exc:
            return Reading(error=exc.reason)
        tunnels = [
            link for link in links if link.is_tunnel and (not self.interfaces or link.name in self.interfaces)
        ]
        userspace = {t.name for t in tunnels if t.kind != "wireguard" and _socket_exists(t.name, self.wg_dir)}
        claims = self._claims(tunnels, userspace)
        state = VpnState(tuple(self._tunnel(t, userspace, claims) for t in tunnels))
        samples: list[SourceSample] = []
        for t in state.tunnels:
            labels = {"interface": t.interface, "vpn_type": t.vpn_type}
            if t.up is not None:
                samples.append(sample("lifeline_vpn_interface_up", 1.0 if t.up else 0.0, **labels))
            if t.handshake_age is not None:
                samples.append(sample("lifeline_vpn_handshake_age_seconds", t.handshake_age, **labels))
            if t.rx_bytes is not None:
                samples.append(sample("lifeline_vpn_bytes_total", t.rx_bytes, direction="rx", **labels))
            if t.tx_bytes is not None:
                samples.append(sample("lifeline_vpn_bytes_total", t.tx_bytes, direction="tx", **labels))
        events = self._events(state)
        self.last_state = state
        return Reading(tuple(samples), tuple(events), state)

    def _events(self, state: VpnState) -> list[SourceEvent]:
        now = {t.interface: t for t in state.tunnels}
        before, self._last = self._last, now
        if before is None:
            return []
        events: list[SourceEvent] = []
        for name, t in now.items():
            old = before.get(name)
            base: dict[str, str | int | float | bool] = {"interface": name, "vpn_type": t.vpn_type}
            if old is None:
                events.append(SourceEvent("vpn.tunnel_appeared", base))
                continue
            if t.up is not None and old.up is not None and t.up != old.up:
                events.append(SourceEvent("vpn.tunnel_up" if t.up else "vpn.tunnel_down", base))
            if t.endpoint and old.endpoint and t.endpoint != old.endpoint:
                events.append(
                    SourceEvent("vpn.endpoint_changed", {**base, "from": old.endpoint, "to": t.endpoint})
                )
            if t.state != old.state and t.state and old.state:
                events.append(SourceEvent("vpn.state_changed", {**base, "from": old.state, "to": t.state}))
        for name, old in before.items():
            if name not in now:
                events.append(SourceEvent("vpn.tunnel_gone", {"interface": name, "vpn_type": old.vpn_type}))
        return events


def _socket_exists(interface: str, directory: str) -> bool:
    return os.path.exists(uapi_socket(interface, directory))


def _read_openvpn(inst: OpenVpnInstance) -> OpenVpnReport:
    reasons = []
    if inst.management:
        try:
            return Management(inst.management, inst.password).read()
        except SourceError as exc:
            reasons.append(exc.reason)  # held by a GUI, or OpenVPN gone: try the status file
    for path in inst.found_status_files():
        try:
            return read_status_file(path)
        except SourceError as exc:
            reasons.append(exc.reason)
    raise SourceUnavailable("; ".join(reasons) or "no management interface or status file configured")


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    if not config.discovery.vpn_interfaces:
        return None
    if not IS_LINUX:
        return not_linux("vpn")
    return VpnSource(
        Netlink().links,
        openvpn=[OpenVpnInstance(status_files=DEFAULT_STATUS_FILES)],
        handshake_critical=config.thresholds.handshake_critical,
    )


SPEC = register(
    SourceSpec(
        kind="vpn",
        factory=_factory,
        metrics=(
            "lifeline_vpn_interface_up",
            "lifeline_vpn_handshake_age_seconds",
            "lifeline_vpn_bytes_total",
        ),
        backends=("wireguard-netlink", "wireguard-uapi", "openvpn-management", "openvpn-status", "link"),
        privileges="CAP_NET_ADMIN (kernel WireGuard); root or the socket group (wireguard-go socket)",
        summary="tunnel interfaces classified; WireGuard handshake age, endpoint, bytes; OpenVPN state",
    )
)
