"""Targets the agent finds by itself: today, every default gateway from the kernel's route table.

The gateway with the lowest metric is the primary path, the others are backups (the hotspot);
each is probed over ICMP bound to its own interface, so the backup is checked while the primary
carries traffic. Parsing is a pure function over ``/proc/net/route`` text.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
from dataclasses import dataclass

from lifeline_agent.config import AgentConfig, Target

log = logging.getLogger(__name__)

PROC_ROUTE = "/proc/net/route"
_RTF_UP, _RTF_GATEWAY = 0x1, 0x2


@dataclass(frozen=True, slots=True)
class Gateway:
    interface: str
    address: str
    metric: int


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
    return "gw-" + re.sub(r"[^A-Za-z0-9._-]", "_", interface)[:61]


def gateway_targets(config: AgentConfig, gateways: list[Gateway]) -> tuple[Target, ...]:
    """ICMP targets for ``gateways``; names already used by configured targets are skipped."""
    taken = {t.name for t in config.targets}
    out: list[Target] = []
    for index, gateway in enumerate(gateways):
        name = target_name(gateway.interface)
        if name in taken:
            continue
        taken.add(name)
        out.append(
            Target(
                name=name,
                role="router",
                kind="icmp",
                host=gateway.address,
                interval=config.schedule.default_interval,
                timeout=min(1.0, config.schedule.default_interval),
                path="primary" if index == 0 else "backup",
                interface=gateway.interface,
                discovered=True,
            )
        )
    return tuple(out)


def discover(config: AgentConfig, route_file: str = PROC_ROUTE) -> tuple[Target, ...]:
    """Every discovered target the config asks for (``[discovery]``)."""
    if not config.discovery.default_gateways:
        return ()
    return gateway_targets(config, read_default_gateways(route_file))


def all_targets(config: AgentConfig, route_file: str = PROC_ROUTE) -> tuple[Target, ...]:
    return config.targets + discover(config, route_file)
