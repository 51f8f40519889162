"""Which way traffic to CAD really goes: routes, mis-routes, the backup path, split DNS.

For each CAD address the kernel is asked which route and source address it would use (rtnetlink
``RTM_GETROUTE``, like ``ip route get``). A CAD address leaving through a non-tunnel interface
while a tunnel is up is **mis-routed** (CAD traffic in the clear, or not reaching CAD at all). The
position is **on the backup** when the CAD route, the route to a VPN endpoint, or the best default
route leaves through the backup interface. The **split-DNS check** resolves each configured CAD
name with the agency resolver and with the system resolver; it is ok when the system answer
includes what the agency says.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError
from lifeline_agent.netlink.rtnetlink import LinkInfo, Netlink, RouteInfo
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
from lifeline_agent.sources.dnsquery import DnsAnswer, query, system_nameserver
from lifeline_agent.sources.registry import SourceSpec, register
from lifeline_agent.sources.vpn import VpnSource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CadRoute:
    target: str
    address: str
    route: RouteInfo | None  # None: no route at all (network unreachable)
    via_tunnel: bool
    misrouted: bool


@dataclass(frozen=True, slots=True)
class SplitDnsResult:
    target: str
    name: str
    ok: bool
    agency: tuple[str, ...] = ()
    system: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RoutesState:
    defaults: tuple[RouteInfo, ...]  # lowest metric first
    cad: tuple[CadRoute, ...]
    tunnels: tuple[str, ...]  # tunnel interfaces that are up
    primary_interface: str
    backup_interface: str
    on_backup: bool
    endpoint_routes: tuple[RouteInfo, ...] = ()  # routes to the VPN concentrators
    split_dns: tuple[SplitDnsResult, ...] = ()

    @property
    def misrouted(self) -> tuple[CadRoute, ...]:
        return tuple(c for c in self.cad if c.misrouted)


def assess(
    defaults: Sequence[RouteInfo],
    cad: Mapping[str, tuple[str, RouteInfo | None]],
    tunnels: set[str],
    backup_interface: str,
    endpoint_routes: Sequence[RouteInfo] = (),
    split_dns: Sequence[SplitDnsResult] = (),
) -> RoutesState:
    """Pure judgement over what the kernel said (tested with recorded routes)."""
    cad_routes = []
    for target, (address, route) in cad.items():
        via_tunnel = route is not None and route.interface in tunnels
        misrouted = bool(tunnels) and route is not None and not via_tunnel
        cad_routes.append(CadRoute(target, address, route, via_tunnel, misrouted))
    best = defaults[0].interface if defaults else ""
    used = [c.route.interface for c in cad_routes if c.route] + [r.interface for r in endpoint_routes]
    on_backup = bool(backup_interface) and (best == backup_interface or backup_interface in used)
    primary = next((r.interface for r in defaults if r.interface != backup_interface), "")
    return RoutesState(
        defaults=tuple(defaults),
        cad=tuple(cad_routes),
        tunnels=tuple(sorted(tunnels)),
        primary_interface=primary,
        backup_interface=backup_interface,
        on_backup=on_backup,
        endpoint_routes=tuple(endpoint_routes),
        split_dns=tuple(split_dns),
    )


def split_dns_check(
    target: str,
    name: str,
    agency: Callable[[str], DnsAnswer],
    system: Callable[[str], DnsAnswer],
) -> SplitDnsResult:
    try:
        theirs = agency(name)
    except SourceError as exc:
        return SplitDnsResult(target, name, False, reason=f"agency resolver: {exc.reason}")
    if not theirs.addresses:
        return SplitDnsResult(
            target, name, False, reason=f"agency resolver answered {theirs.rcode} with no address"
        )
    try:
        ours = system(name)
    except SourceError as exc:
        return SplitDnsResult(target, name, False, theirs.addresses, reason=f"system resolver: {exc.reason}")
    ok = bool(set(ours.addresses) & set(theirs.addresses))
    reason = "" if ok else f"system resolver answered {ours.rcode} {list(ours.addresses)}, not the agency's"
    return SplitDnsResult(target, name, ok, theirs.addresses, ours.addresses, reason)


def server_address(server: str) -> tuple[str, int]:
    """ "10.0.0.53" → (10.0.0.53, 53); "10.0.0.53:5353", "[fd00::53]:53" → with that port."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]:")
        return host.rstrip("]"), int(port) if port else 53
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, 53


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RoutesSource:
    name = "routes"

    def __init__(
        self,
        netlink: Netlink,
        cad_targets: Sequence[tuple[str, str]],  # (target name, address or DNS name)
        *,
        backup_interface: str = "",
        vpn: VpnSource | None = None,
        agency_resolvers: Sequence[str] = (),  # "addr", "addr:port" or "[v6addr]:port"
        system_resolver: str | None = None,  # None: the first nameserver of /etc/resolv.conf
        dns_timeout: float = 1.0,
        split_dns_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netlink = netlink
        self.cad_targets = tuple(cad_targets)
        self.backup_interface = backup_interface
        self._backup_sticky = backup_interface
        self.vpn = vpn
        self.agency_resolvers = tuple(agency_resolvers)
        self.system_resolver = system_resolver
        self.dns_timeout = dns_timeout
        self.split_dns_interval = split_dns_interval
        self.clock = clock
        self._dns: tuple[SplitDnsResult, ...] = ()
        self._plain: dict[str, tuple[str, ...]] = {}
        self._dns_at: float | None = None
        self._last: RoutesState | None = None
        self.last_state: RoutesState | None = None

    def available(self) -> Availability:
        try:
            self.netlink.links()
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def _resolve(self, server: str) -> Callable[[str], DnsAnswer]:
        host, port = server_address(server)

        def ask(name: str) -> DnsAnswer:
            return query(name, host, port=port, timeout=self.dns_timeout)

        return ask

    def _split_dns(self) -> tuple[SplitDnsResult, ...]:
        names = [(t, h) for t, h in self.cad_targets if not is_address(h)]
        if not names:
            return ()
        now = self.clock()
        if self._dns_at is not None and now - self._dns_at < self.split_dns_interval:
            return self._dns
        system = self.system_resolver if self.system_resolver is not None else system_nameserver()
        results = []
        for target, host in names:
            if not self.agency_resolvers:
                # Nothing to compare against (no [[targets]] of role "dns"): no check, no sample;
                # the system's answer still tells which address to route-check.
                self._plain[target] = _addresses_or_none(self._resolve(system), host) if system else ()
                continue
            if not system:
                results.append(SplitDnsResult(target, host, False, reason="no system nameserver"))
                continue
            result = split_dns_check(
                target, host, self._resolve(self.agency_resolvers[0]), self._resolve(system)
            )
            for extra in self.agency_resolvers[1:]:
                if result.ok or result.agency:
                    break
                result = split_dns_check(target, host, self._resolve(extra), self._resolve(system))
            results.append(result)
        self._dns, self._dns_at = tuple(results), now
        return self._dns

    def _addresses(self, split: Sequence[SplitDnsResult]) -> dict[str, str]:
        """The address to route-check per CAD target: the literal, else what the agency (or system) said."""
        answers = {**self._plain, **{r.target: (r.agency or r.system) for r in split}}
        out = {}
        for target, host in self.cad_targets:
            if is_address(host):
                out[target] = host
            elif answers.get(target):
                out[target] = answers[target][0]
        return out

    def _backup(self, defaults: Sequence[RouteInfo]) -> str:
        if self.backup_interface:
            return self.backup_interface
        interfaces = list(dict.fromkeys(r.interface for r in defaults if r.interface))
        if len(interfaces) >= 2:
            self._backup_sticky = interfaces[-1]  # the highest metric: the hotspot
        return self._backup_sticky

    def read(self) -> Reading[RoutesState]:
        try:
            split = self._split_dns()
            addresses = self._addresses(split)
            endpoints = list(self.vpn.last_state.endpoints()) if self.vpn and self.vpn.last_state else []
            links: list[LinkInfo] = self.netlink.links()
            defaults, chosen = self.netlink.routes(list(dict.fromkeys([*addresses.values(), *endpoints])))
        except SourceError as exc:
            return Reading(error=exc.reason)
        tunnels = {link.name for link in links if link.is_tunnel and link.up}
        state = assess(
            defaults,
            {t: (a, chosen.get(a)) for t, a in addresses.items()},
            tunnels,
            self._backup(defaults),
            [r for e in endpoints if (r := chosen.get(e)) is not None],
            split,
        )
        samples: list[SourceSample] = [sample("lifeline_on_backup", 1.0 if state.on_backup else 0.0)]
        for c in state.cad:
            samples.append(sample("lifeline_vpn_misrouted", 1.0 if c.misrouted else 0.0, target=c.target))
        for check in state.split_dns:
            samples.append(sample("lifeline_vpn_split_dns_ok", 1.0 if check.ok else 0.0, target=check.target))
        events = self._events(state)
        self.last_state = state
        return Reading(tuple(samples), tuple(events), state)

    def _events(self, state: RoutesState) -> list[SourceEvent]:
        before, self._last = self._last, state
        if before is None:
            return [SourceEvent("route.misrouted", _cad_attrs(c)) for c in state.misrouted]
        events: list[SourceEvent] = []
        if state.on_backup != before.on_backup:
            events.append(
                SourceEvent(
                    "route.on_backup" if state.on_backup else "route.on_primary",
                    {
                        "backup_interface": state.backup_interface,
                        "primary_interface": state.primary_interface,
                    },
                )
            )
        old = {c.target: c for c in before.cad}
        for c in state.cad:
            prev = old.get(c.target)
            if c.misrouted and (prev is None or not prev.misrouted):
                events.append(SourceEvent("route.misrouted", _cad_attrs(c)))
            elif prev is not None and prev.misrouted and not c.misrouted:
                events.append(SourceEvent("route.misroute_cleared", _cad_attrs(c)))
            if prev is not None and _iface(prev) != _iface(c):
                events.append(
                    SourceEvent("route.cad_changed", {**_cad_attrs(c), "from_interface": _iface(prev)})
                )
        dns_before = {r.target: r.ok for r in before.split_dns}
        for r in state.split_dns:
            if r.target in dns_before and dns_before[r.target] != r.ok:
                events.append(
                    SourceEvent("dns.split_dns_changed", {"target": r.target, "ok": r.ok, "reason": r.reason})
                )
        return events


class CadRouteLog:
    """Says once, and on every change, which interface and source address carry each CAD address."""

    def __init__(self) -> None:
        self._seen: tuple[tuple[str, str, str, str, bool], ...] = ()

    def update(self, state: object) -> None:
        """``state``: the routes source's facts (a ``RoutesState``)."""
        seen = tuple(
            (
                c.target,
                c.address,
                c.route.interface if c.route else "",
                c.route.prefsrc if c.route else "",
                c.misrouted,
            )
            for c in getattr(state, "cad", ())
        )
        if seen == self._seen:
            return
        self._seen = seen
        for target, address, interface, source, misrouted in seen:
            log.log(
                logging.WARNING if misrouted or not interface else logging.INFO,
                "CAD %s (%s) is reached %s%s",
                target,
                address,
                f"via {interface} from {source or '?'}" if interface else "by no route",
                " — MIS-ROUTED outside the VPN tunnel" if misrouted else "",
                extra={"target": target},
            )


def _addresses_or_none(resolve: Callable[[str], DnsAnswer], name: str) -> tuple[str, ...]:
    try:
        return resolve(name).addresses
    except SourceError:
        return ()


def _iface(c: CadRoute) -> str:
    return c.route.interface if c.route else ""


def _cad_attrs(c: CadRoute) -> dict[str, str | int | float | bool]:
    return {
        "target": c.target,
        "address": c.address,
        "interface": _iface(c),
        "source": c.route.prefsrc if c.route else "",
    }


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    if not IS_LINUX:
        return not_linux("routes")
    vpn = built.get("vpn")
    return RoutesSource(
        Netlink(),
        [(t.name, t.host) for t in config.cad_targets() if t.host],
        backup_interface=config.collector.backup_interface,
        vpn=vpn if isinstance(vpn, VpnSource) else None,
        agency_resolvers=[t.host for t in config.targets if t.kind == "dns" and t.role == "dns" and t.host],
    )


SPEC = register(
    SourceSpec(
        kind="routes",
        factory=_factory,
        metrics=("lifeline_on_backup", "lifeline_vpn_misrouted", "lifeline_vpn_split_dns_ok"),
        backends=("rtnetlink", "dns"),
        privileges="none",
        summary="route and source address to each CAD address, mis-routes, backup in use, split DNS",
    )
)
