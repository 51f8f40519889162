"""Interface health: a fake sysfs tree with recorded psutil counters, real loopback, a real veth."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from lifeline_agent.config import parse
from lifeline_agent.sources.interfaces import InterfacesSource, configured_interfaces


class IfStats(NamedTuple):  # the fields of psutil's snicstats the source reads
    isup: bool
    mtu: int = 1500


class IoCounters(NamedTuple):  # psutil's snetio
    bytes_sent: int
    bytes_recv: int
    packets_sent: int = 0
    packets_recv: int = 0
    errin: int = 0
    errout: int = 0
    dropin: int = 0
    dropout: int = 0


def _sysfs(root: Path, name: str, carrier: int | None, changes: int) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    if carrier is None:
        (root / name / "carrier").unlink(missing_ok=True)
    else:
        (root / name / "carrier").write_text(f"{carrier}\n")
    (root / name / "carrier_changes").write_text(f"{changes}\n")


class Machine:
    """What psutil and sysfs say about a laptop with Wi-Fi primary and a USB hotspot backup."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats: dict[str, Any] = {"wlan0": IfStats(True), "usb0": IfStats(True)}
        self.io: dict[str, Any] = {
            "wlan0": IoCounters(1000, 5000, errin=1, dropin=2),
            "usb0": IoCounters(300, 700, errout=4, dropout=3),
        }
        _sysfs(root, "wlan0", 1, 4)
        _sysfs(root, "usb0", 1, 2)

    def source(self) -> InterfacesSource:
        return InterfacesSource(
            {"wlan0": "primary", "usb0": "backup"},
            sysfs_root=str(self.root),
            if_stats=lambda: self.stats,
            io_counters=lambda: self.io,
        )


def _values(reading: Any) -> dict[tuple[str, ...], float]:
    return {(s.name, *sorted(s.labels.values())): s.value for s in reading.samples}


def test_counters_and_carrier_changes_since_start(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    source = machine.source()
    assert source.available().ok
    first = source.read()
    assert first.ok
    assert first.facts is not None
    wlan = first.facts.get("wlan0")
    assert wlan is not None
    assert (wlan.up, wlan.carrier, wlan.carrier_changes) == (True, True, 0)
    values = _values(first)
    assert values[("lifeline_interface_up", "primary", "wlan0")] == 1.0
    assert values[("lifeline_interface_errors_total", "primary", "rx", "wlan0")] == 1.0
    assert values[("lifeline_interface_drops_total", "primary", "rx", "wlan0")] == 2.0
    assert values[("lifeline_interface_bytes_total", "primary", "tx", "wlan0")] == 1000.0
    assert values[("lifeline_backup_bytes_total", "tx", "usb0")] == 300.0
    assert values[("lifeline_backup_bytes_total", "rx", "usb0")] == 700.0
    assert not any(k[0] == "lifeline_backup_bytes_total" and "wlan0" in k for k in values)

    _sysfs(tmp_path, "wlan0", 0, 5)  # the access point went away
    second = source.read()
    wlan = second.facts.get("wlan0")  # type: ignore[union-attr]
    assert wlan is not None
    assert (wlan.up, wlan.carrier, wlan.carrier_changes) == (False, False, 1)
    assert [(e.type, e.attributes) for e in second.events] == [
        (
            "interface.carrier_changed",
            {"interface": "wlan0", "path": "primary", "up": False, "changes": 1},
        )
    ]


def test_recreated_device_keeps_the_counter_monotonic(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    source = machine.source()
    source.read()
    _sysfs(tmp_path, "usb0", 1, 6)
    assert source.read().facts.get("usb0").carrier_changes == 4  # type: ignore[union-attr]
    _sysfs(tmp_path, "usb0", 1, 1)  # hotspot re-plugged: the kernel counter restarts
    assert source.read().facts.get("usb0").carrier_changes == 5  # type: ignore[union-attr]


def test_vanished_interface_is_down_not_missing(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    source = machine.source()
    source.read()
    del machine.stats["usb0"], machine.io["usb0"]
    reading = source.read()
    usb = reading.facts.get("usb0")  # type: ignore[union-attr]
    assert usb is not None
    assert (usb.present, usb.up) == (False, False)
    assert _values(reading)[("lifeline_interface_up", "backup", "usb0")] == 0.0
    assert [e.type for e in reading.events] == ["interface.removed"]


def test_no_interface_is_unavailable() -> None:
    source = InterfacesSource({})
    assert source.available().ok is False
    assert not source.read().ok


def test_configured_interfaces_from_config() -> None:
    config = parse(
        {
            "agent": {"id": "pos-1"},
            "collector": {"backup_interface": "usb0"},
            "targets": [
                {
                    "name": "gw",
                    "role": "router",
                    "host": "192.168.1.1",
                    "interface": "wlan0",
                    "path": "primary",
                },
                {"name": "hub", "role": "vpn", "host": "203.0.113.10", "interface": "usb0", "path": "backup"},
                {"name": "cad", "role": "cad", "host": "10.20.0.10"},
            ],
        }
    )
    assert configured_interfaces(config) == {"usb0": "backup", "wlan0": "primary"}


def test_real_loopback_through_psutil_and_sysfs() -> None:
    reading = InterfacesSource({"lo": "primary"}).read()
    assert reading.ok
    assert reading.facts is not None
    lo = reading.facts.get("lo")
    assert lo is not None
    assert lo.present
    assert lo.up


@pytest.mark.lab
def test_real_carrier_loss_on_a_veth(netns: Callable[[], str]) -> None:
    peer_ns = netns()
    name = f"llv{secrets.token_hex(3)}"
    subprocess.run(
        ["ip", "link", "add", name, "type", "veth", "peer", "name", "lan0", "netns", peer_ns], check=True
    )
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        subprocess.run(["ip", "-n", peer_ns, "link", "set", "lan0", "up"], check=True)
        source = InterfacesSource({name: "primary"})
        first = source.read()
        assert first.facts is not None
        assert first.facts.get(name).up
        subprocess.run(["ip", "-n", peer_ns, "link", "set", "lan0", "down"], check=True)  # cable pulled
        second = source.read()
        facts = second.facts.get(name)  # type: ignore[union-attr]
        assert facts is not None
        assert (facts.up, facts.carrier) == (False, False)
        assert facts.carrier_changes >= 1
        assert [e.type for e in second.events] == ["interface.carrier_changed"]
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)
