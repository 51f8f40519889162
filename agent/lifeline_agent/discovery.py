"""Targets the agent finds by itself: default gateways, VPN concentrators, the backup path.

- Every default gateway (``/proc/net/route``) becomes a ``router`` target bound to its interface;
  the lowest metric is the primary path, the others are backups (the hotspot).
- Every VPN concentrator endpoint the VPN source reports (the WireGuard peer endpoint, the
  OpenVPN remote) becomes a ``vpn`` target on the primary path, and, when a backup interface is
  known, a second one bound to it (SO_BINDTODEVICE, path ``backup``): "failover ready" is then
  measured, with its RTT and loss, while the primary carries traffic.
- A configured ``path = "backup"`` target without an interface is bound to the backup interface,
  otherwise it would follow the default route and measure the primary instead.

Parsing is a pure function over ``/proc/net/route`` text; the rest is pure over its inputs,
except ``Discovery``: the targets the agent probes now, found again when the network changes.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from lifeline_agent.config import AgentConfig, Target
from lifeline_agent.recorder import Recorder

log = logging.getLogger(__name__)

PROC_ROUTE = "/proc/net/route"
_RTF_UP, _RTF_GATEWAY = 0x1, 0x2


@dataclass(frozen=True, slots=True)
class Gateway:
    interface: str
    address: str
    metric: int


GATEWAY_BURST_MIN_INTERVAL = 0.6  # below this a burst and its timeout do not fit the interval


def parse_proc_route(text: str) -> list[Gateway]:
    """Default routes with a gateway, lowest metric first (one per interface)."""
    found: dict[str, Gateway] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, gateway, flags, metric, mask = (
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            fields[6],
            fields[7],
        )
        try:
            is_default = int(dest, 16) == 0 and int(mask, 16) == 0
            flag_bits = int(flags, 16)
            address = socket.inet_ntoa(struct.pack("<I", int(gateway, 16)))
            metric_value = int(metric)
        except (ValueError, struct.error):
            continue
        if not is_default or flag_bits & (_RTF_UP | _RTF_GATEWAY) != (_RTF_UP | _RTF_GATEWAY):
            continue
        route = Gateway(iface, address, metric_value)
        if iface not in found or route.metric < found[iface].metric:
            found[iface] = route
    return sorted(found.values(), key=lambda g: (g.metric, g.interface))


def read_default_gateways(path: str = PROC_ROUTE) -> list[Gateway]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return parse_proc_route(handle.read())
    except OSError as exc:
        log.warning("cannot read default gateways from %s: %s", path, exc.strerror)
        return []


def target_name(interface: str) -> str:
    """``gw-<ifname>`` with characters outside the target-name alphabet replaced."""
    return "gw-" + _safe(interface)[:61]


def gateway_targets(config: AgentConfig, gateways: list[Gateway]) -> tuple[Target, ...]:
    """ICMP targets for ``gateways``; names already used by configured targets are skipped."""
    taken = {t.name for t in config.targets}
    out: list[Target] = []
    for index, gateway in enumerate(gateways):
        name = target_name(gateway.interface)
        if name in taken:
            continue
        taken.add(name)
        interval = config.schedule.default_interval
        # The first hop decides between "the home network loses packets" and everything further
        # on, so it gets a burst of 3 echoes a round, as the CAD host does (a single echo a second
        # is too thin to compare with the loss the probes behind it see); a LAN answers in ms.
        burst = interval >= GATEWAY_BURST_MIN_INTERVAL
        out.append(
            Target(
                name=name,
                role="router",
                kind="icmp",
                host=gateway.address,
                interval=interval,
                timeout=min(0.5, interval / 2) if burst else min(1.0, interval),
                count=3 if burst else 1,
                spacing=0.02,
                path="primary" if index == 0 else "backup",
                interface=gateway.interface,
                discovered=True,
            )
        )
    return tuple(out)


def backup_interface(config: AgentConfig, gateways: Sequence[Gateway]) -> str:
    """The configured backup interface, else the default route with the higher metric."""
    if config.collector.backup_interface:
        return config.collector.backup_interface
    interfaces = list(dict.fromkeys(g.interface for g in gateways))
    return interfaces[-1] if len(interfaces) >= 2 else ""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def vpn_targets(
    config: AgentConfig, endpoints: Sequence[str], backup: str, taken: set[str]
) -> tuple[Target, ...]:
    """``vpn-<addr>`` (primary path) and ``vpn-<addr>-backup`` (bound to ``backup``) per endpoint.

    The primary one is not bound to an interface: it follows the route the tunnel itself takes, so
    it keeps telling the truth when the position has failed over. Endpoints a configured target
    already probes on that path are left to the configuration.
    """
    interval = config.schedule.default_interval
    configured = {(t.host, t.path == "backup") for t in config.targets}
    out: list[Target] = []
    for endpoint in dict.fromkeys(e for e in endpoints if e):
        for on_backup in (False, True):
            if on_backup and not backup:
                continue
            name = f"vpn-{_safe(endpoint)}"[:58] + ("-backup" if on_backup else "")
            if name in taken or (endpoint, on_backup) in configured:
                continue
            taken.add(name)
            out.append(
                Target(
                    name=name,
                    role="vpn",
                    kind="icmp",
                    host=endpoint,
                    interval=interval,
                    timeout=min(1.0, interval),
                    path="backup" if on_backup else "primary",
                    interface=backup if on_backup else "",
                    discovered=True,
                )
            )
    return tuple(out)


def bind_backup_targets(targets: Sequence[Target], backup: str) -> tuple[Target, ...]:
    """Configured backup-path targets without an interface get the backup interface."""
    if not backup:
        return tuple(targets)
    return tuple(
        replace(t, interface=backup) if t.path == "backup" and not t.interface else t for t in targets
    )


def discover(
    config: AgentConfig, route_file: str = PROC_ROUTE, vpn_endpoints: Sequence[str] = ()
) -> tuple[Target, ...]:
    """Every discovered target the config asks for (``[discovery]``)."""
    gateways = read_default_gateways(route_file)
    found = gateway_targets(config, gateways) if config.discovery.default_gateways else ()
    if config.discovery.vpn_interfaces and vpn_endpoints:
        taken = {t.name for t in (*config.targets, *found)}
        found += vpn_targets(config, vpn_endpoints, backup_interface(config, gateways), taken)
    return found


def all_targets(
    config: AgentConfig, route_file: str = PROC_ROUTE, vpn_endpoints: Sequence[str] = ()
) -> tuple[Target, ...]:
    """Configured targets (backup-path ones bound to the backup interface) plus discovered ones."""
    backup = backup_interface(config, read_default_gateways(route_file))
    return bind_backup_targets(config.targets, backup) + discover(config, route_file, vpn_endpoints)


class TargetSetter(Protocol):
    """What rediscovery changes (the probe scheduler): returns the targets added and removed."""

    def set_targets(self, targets: tuple[Target, ...]) -> tuple[Sequence[Target], Sequence[Target]]: ...


class Discovery:
    """The targets the agent probes now (``targets``) and those no probe can run (``skipped``).

    A target whose kind has no probe is left out rather than shown as failing: a CAD target
    reported "down" because nobody can probe it would page a supervisor for nothing. Targets given
    by the caller are never re-discovered (``enabled`` is False); discovered ones follow the
    default gateways and the VPN concentrator endpoints the VPN source reports.
    """

    def __init__(
        self, config: AgentConfig, given: Sequence[Target] | None, probe_kinds: Collection[str]
    ) -> None:
        self.config = config
        self.enabled = given is None
        self.probe_kinds = probe_kinds
        self.vpn_endpoints: tuple[str, ...] = ()
        self.targets, self.skipped = self._split(all_targets(config) if given is None else tuple(given))
        for target in self.skipped:
            log.warning(
                "no probe for kind %r yet: target not probed",
                target.kind,
                extra={"probe": target.kind, "target": target.name},
            )

    def _split(self, wanted: tuple[Target, ...]) -> tuple[tuple[Target, ...], tuple[Target, ...]]:
        kinds = self.probe_kinds
        return tuple(t for t in wanted if t.kind in kinds), tuple(t for t in wanted if t.kind not in kinds)

    def saw_vpn_endpoints(self, endpoints: tuple[str, ...]) -> bool:
        """Keep the endpoints the VPN source reports; True when they changed (discovery is due)."""
        if endpoints == self.vpn_endpoints:
            return False
        self.vpn_endpoints = endpoints
        log.info("VPN concentrator endpoints: %s", ", ".join(endpoints) or "none")
        return True

    def rediscover(self, scheduler: TargetSetter, recorder: Recorder, forget: Callable[[str], None]) -> None:
        """Run discovery again and start or stop the targets that changed; ``forget`` drops what the
        agent kept about a target that is gone."""
        wanted, skipped = self._split(all_targets(self.config, vpn_endpoints=self.vpn_endpoints))
        added, removed = scheduler.set_targets(wanted)
        self.targets, self.skipped = wanted, skipped
        for target in removed:
            if target.name not in {t.name for t in wanted}:
                forget(target.name)
        if added or removed:
            log.info(
                "targets changed: +%s -%s",
                ",".join(t.name for t in added) or "none",
                ",".join(t.name for t in removed) or "none",
            )
            recorder.event(
                "discovery.targets_changed",
                {"added": ",".join(t.name for t in added), "removed": ",".join(t.name for t in removed)},
            )
