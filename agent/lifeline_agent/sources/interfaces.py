"""Health of the interfaces that matter: up, carrier changes, errors, drops, bytes.

Only the interfaces given (or discovered: default-route interfaces as primary/backup, tunnels)
are read, each with its path (primary, backup, tunnel). Counters come from psutil
(``net_if_stats``, ``net_io_counters(pernic=True, nowrap=True)``); carrier state and the kernel's
``carrier_changes`` counter from ``/sys/class/net/<if>/`` (the root is a parameter for tests).
The netlink watcher reports the same changes as events the moment they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError
from lifeline_agent.netlink.rtnetlink import Netlink
from lifeline_agent.sources.base import (
    IS_LINUX,
    Availability,
    Reading,
    Source,
    SourceEvent,
    SourceSample,
    sample,
)
from lifeline_agent.sources.registry import SourceSpec, register

SYS_CLASS_NET = "/sys/class/net"
PATHS = ("primary", "backup", "tunnel")


@dataclass(frozen=True, slots=True)
class InterfaceFacts:
    name: str
    path: str  # primary | backup | tunnel
    present: bool
    up: bool = False  # administratively up and carrier present
    carrier: bool | None = None
    carrier_changes: int = 0  # seen since the agent started
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_drops: int = 0
    tx_drops: int = 0


@dataclass(frozen=True, slots=True)
class InterfacesState:
    interfaces: tuple[InterfaceFacts, ...] = ()

    def get(self, name: str) -> InterfaceFacts | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def by_path(self, path: str) -> tuple[InterfaceFacts, ...]:
        return tuple(i for i in self.interfaces if i.path == path)


def read_sysfs_int(root: str | Path, interface: str, name: str) -> int | None:
    """``/sys/class/net/<if>/<name>`` as an integer; None if absent or unreadable (carrier of a down link)."""
    try:
        return int((Path(root) / interface / name).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def discover_interfaces(netlink: Netlink, fixed: Mapping[str, str]) -> dict[str, str]:
    """Fixed names first; then default-route interfaces (lowest metric primary, others backup) and tunnels."""
    out = dict(fixed)
    links = netlink.links()
    defaults, _ = netlink.routes([])
    for number, route in enumerate(r for r in defaults if r.interface):
        out.setdefault(route.interface, "primary" if number == 0 else "backup")
    for link in links:
        if link.is_tunnel:
            out.setdefault(link.name, "tunnel")
    return out


class InterfacesSource:
    name = "interfaces"

    def __init__(
        self,
        interfaces: Mapping[str, str] | Callable[[], Mapping[str, str]],
        *,
        sysfs_root: str = SYS_CLASS_NET,
        if_stats: Callable[[], Mapping[str, Any]] = psutil.net_if_stats,
        io_counters: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._interfaces = interfaces
        self.sysfs_root = sysfs_root
        self._if_stats = if_stats
        self._io = io_counters or (lambda: psutil.net_io_counters(pernic=True, nowrap=True))
        self._changes_prev: dict[str, int] = {}
        self._changes_acc: dict[str, int] = {}
        self._last: dict[str, InterfaceFacts] | None = None
        # Paths stick: once usb0 was seen as backup it stays backup when the primary route vanishes.
        self._paths: dict[str, str] = {}

    def _wanted(self) -> dict[str, str]:
        found = self._interfaces() if callable(self._interfaces) else self._interfaces
        for name, path in found.items():
            self._paths.setdefault(name, path)
        return dict(self._paths)

    def available(self) -> Availability:
        try:
            wanted = self._wanted()
        except SourceError as exc:
            return Availability(False, exc.reason)
        if not wanted:
            return Availability(False, "no interface configured or discovered")
        return Availability(True)

    def _carrier_changes(self, name: str) -> int:
        current = read_sysfs_int(self.sysfs_root, name, "carrier_changes")
        if current is None:
            return self._changes_acc.get(name, 0)
        prev = self._changes_prev.get(name)
        if prev is not None:
            # A smaller value means the device was re-created (a hotspot re-plugged): count from zero.
            self._changes_acc[name] = self._changes_acc.get(name, 0) + (
                current - prev if current >= prev else current
            )
        self._changes_prev[name] = current
        return self._changes_acc.setdefault(name, 0)

    def read(self) -> Reading[InterfacesState]:
        try:
            wanted = self._wanted()
        except SourceError as exc:
            return Reading(error=exc.reason)
        if not wanted:
            return Reading(error="no interface configured or discovered")
        stats, counters = self._if_stats(), self._io()
        out = []
        for name, path in wanted.items():
            st, io = stats.get(name), counters.get(name)
            if st is None:
                out.append(InterfaceFacts(name, path, present=False))
                continue
            carrier_raw = read_sysfs_int(self.sysfs_root, name, "carrier")
            carrier = None if carrier_raw is None else carrier_raw == 1
            out.append(
                InterfaceFacts(
                    name=name,
                    path=path,
                    present=True,
                    up=bool(st.isup) and carrier is not False,
                    carrier=carrier,
                    carrier_changes=self._carrier_changes(name),
                    rx_bytes=io.bytes_recv if io else 0,
                    tx_bytes=io.bytes_sent if io else 0,
                    rx_errors=io.errin if io else 0,
                    tx_errors=io.errout if io else 0,
                    rx_drops=io.dropin if io else 0,
                    tx_drops=io.dropout if io else 0,
                )
            )
        state = InterfacesState(tuple(out))
        return Reading(self._samples(state), self._events(state), state)

    def _samples(self, state: InterfacesState) -> tuple[SourceSample, ...]:
        samples: list[SourceSample] = []
        for i in state.interfaces:
            labels = {"interface": i.name, "path": i.path}
            samples.append(sample("lifeline_interface_up", 1.0 if i.up else 0.0, **labels))
            if not i.present:
                continue
            samples.append(sample("lifeline_interface_carrier_changes_total", i.carrier_changes, **labels))
            for direction, errors, drops, octets in (
                ("rx", i.rx_errors, i.rx_drops, i.rx_bytes),
                ("tx", i.tx_errors, i.tx_drops, i.tx_bytes),
            ):
                samples.append(
                    sample("lifeline_interface_errors_total", errors, direction=direction, **labels)
                )
                samples.append(sample("lifeline_interface_drops_total", drops, direction=direction, **labels))
                samples.append(
                    sample("lifeline_interface_bytes_total", octets, direction=direction, **labels)
                )
                if i.path == "backup":
                    samples.append(
                        sample("lifeline_backup_bytes_total", octets, interface=i.name, direction=direction)
                    )
        return tuple(samples)

    def _events(self, state: InterfacesState) -> tuple[SourceEvent, ...]:
        now = {i.name: i for i in state.interfaces}
        before, self._last = self._last, now
        if before is None:
            return ()
        events = []
        for name, i in now.items():
            old = before.get(name)
            if old is None:
                continue
            attributes: dict[str, str | int | float | bool] = {"interface": name, "path": i.path}
            if i.present != old.present:
                events.append(
                    SourceEvent("interface.added" if i.present else "interface.removed", attributes)
                )
            elif i.up != old.up or i.carrier_changes != old.carrier_changes:
                events.append(
                    SourceEvent(
                        "interface.carrier_changed",
                        {**attributes, "up": i.up, "changes": i.carrier_changes - old.carrier_changes},
                    )
                )
        return tuple(events)


def configured_interfaces(config: AgentConfig) -> dict[str, str]:
    """Interfaces the config names: targets bound to an interface with a path, the backup interface."""
    out: dict[str, str] = {}
    if config.collector.backup_interface:
        out[config.collector.backup_interface] = "backup"
    for target in config.targets:
        if target.interface and target.path in PATHS:
            out.setdefault(target.interface, target.path)
    return out


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    fixed = configured_interfaces(config)
    if not IS_LINUX:
        return InterfacesSource(fixed)  # psutil works everywhere; no discovery, no sysfs
    netlink = Netlink()
    return InterfacesSource(lambda: discover_interfaces(netlink, fixed))


SPEC = register(
    SourceSpec(
        kind="interfaces",
        factory=_factory,
        metrics=(
            "lifeline_interface_up",
            "lifeline_interface_carrier_changes_total",
            "lifeline_interface_errors_total",
            "lifeline_interface_drops_total",
            "lifeline_interface_bytes_total",
            "lifeline_backup_bytes_total",
        ),
        backends=("psutil+sysfs",),
        privileges="none",
        summary="up, carrier changes, errors, drops and bytes of the primary, backup and tunnel interfaces",
    )
)
