"""Power from a fake /sys/class/power_supply tree and recorded psutil battery readings."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import psutil
import pytest

from lifeline_agent.errors import SourceParseError
from lifeline_agent.sources.power import MainsSupply, PowerSource, PsutilBackend, read_mains


class Battery(NamedTuple):
    """The fields of psutil's ``sbattery`` (its class lives in a private module that moves)."""

    percent: float
    secsleft: int
    power_plugged: bool | None


# What psutil.sensors_battery() returned on a ThinkPad: on battery, 64 %, 1 h 30 left; then charging.
ON_BATTERY = Battery(percent=64.0, secsleft=5400, power_plugged=False)
CHARGING = Battery(percent=97.0, secsleft=psutil.POWER_TIME_UNLIMITED, power_plugged=True)


def _supply(root: Path, name: str, kind: str, online: str | None = None) -> None:
    entry = root / name
    entry.mkdir(parents=True)
    (entry / "type").write_text(kind + "\n")
    if online is not None:
        (entry / "online").write_text(online + "\n")


def test_mains_supplies_of_any_name(tmp_path: Path) -> None:
    _supply(tmp_path, "ADP1", "Mains", "1")
    _supply(tmp_path, "ucsi-source-psy-USBC000:001", "USB", "0")
    _supply(tmp_path, "BAT0", "Battery")
    _supply(tmp_path, "ACAD", "Mains", "0")
    assert read_mains(tmp_path) == [MainsSupply("ACAD", False), MainsSupply("ADP1", True)]
    assert read_mains(tmp_path / "absent") == []


def test_mains_with_garbage_online_is_named(tmp_path: Path) -> None:
    _supply(tmp_path, "AC", "Mains", "yes")
    with pytest.raises(SourceParseError, match="AC/online"):
        read_mains(tmp_path)


def test_sysfs_mains_wins_over_psutil_guess(tmp_path: Path) -> None:
    # psutil says plugged (it saw the battery "Charging"), but the only mains supply is offline.
    _supply(tmp_path, "ADP1", "Mains", "0")
    reading = PowerSource([PsutilBackend(str(tmp_path), battery=lambda: CHARGING)]).read()
    assert reading.ok
    assert reading.facts is not None
    assert reading.facts.on_ac is False


def test_on_battery_samples_and_ac_events(tmp_path: Path) -> None:
    _supply(tmp_path, "ADP1", "Mains", "1")
    battery = [CHARGING]
    source = PowerSource([PsutilBackend(str(tmp_path), battery=lambda: battery[0])])
    first = source.read()
    assert {(s.name, s.value) for s in first.samples} == {
        ("lifeline_power_on_ac", 1.0),
        ("lifeline_battery_ratio", 0.97),
    }
    (tmp_path / "ADP1" / "online").write_text("0\n")
    battery[0] = ON_BATTERY
    second = source.read()
    assert {(s.name, s.value) for s in second.samples} == {
        ("lifeline_power_on_ac", 0.0),
        ("lifeline_battery_ratio", 0.64),
        ("lifeline_battery_time_left_seconds", 5400.0),
    }
    assert [(e.type, e.attributes) for e in second.events] == [("power.ac_lost", {"battery_percent": 64.0})]
    (tmp_path / "ADP1" / "online").write_text("1\n")
    assert [e.type for e in source.read().events] == ["power.ac_restored"]


def test_desktop_without_battery_uses_mains_only(tmp_path: Path) -> None:
    _supply(tmp_path, "AC", "Mains", "1")
    reading = PowerSource([PsutilBackend(str(tmp_path), battery=lambda: None)]).read()
    assert reading.ok
    assert reading.facts is not None
    assert (reading.facts.on_ac, reading.facts.percent) == (True, None)


def test_no_battery_no_mains_is_unavailable_not_on_ac(tmp_path: Path) -> None:
    source = PowerSource([PsutilBackend(str(tmp_path), battery=lambda: None)])
    assert source.available().ok is False
    reading = source.read()
    assert not reading.ok
    assert reading.samples == ()
    assert "no battery and no mains" in reading.error


def test_psutil_only_when_sysfs_has_no_mains(tmp_path: Path) -> None:
    reading = PowerSource([PsutilBackend(str(tmp_path), battery=lambda: ON_BATTERY)]).read()
    assert reading.facts is not None
    assert (reading.facts.on_ac, reading.facts.secs_left) == (False, 5400.0)
