"""The fixture file format: validation, per-section replay, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline_lab import fixtures

pytestmark = pytest.mark.lab


def test_validate_names_each_bad_field() -> None:
    problems = fixtures.validate(
        {
            "ts_ms": "soon",
            "wifi": {"signal_dbm": "-50", "colour": 1},
            "cellular": {"access_technology": "6g", "signal_quality": 2},
            "power": {"on_ac": 1},
            "gps": {},
        }
    )
    paths = {p for p, _r in problems}
    assert paths == {
        "ts_ms",
        "wifi.signal_dbm",
        "wifi.colour",
        "cellular.access_technology",
        "cellular.signal_quality",
        "power.on_ac",
        "gps",
    }
    assert fixtures.validate({"ts_ms": 1, **fixtures.HEALTHY}) == []
    assert fixtures.validate({"ts_ms": 1, "cellular": None, "power": {"secs_left": None}}) == []


def test_each_section_replays_on_its_own() -> None:
    readings = [
        {"ts_ms": 1000, "wifi": {"signal_dbm": -50}, "power": {"on_ac": True}},
        {"ts_ms": 2000, "wifi": {"signal_dbm": -70}},
        {"ts_ms": 3000, "power": {"on_ac": False, "battery_ratio": 0.9}},
        {"ts_ms": 4000, "cellular": None},
    ]
    assert fixtures.at(readings, 999) == {}
    assert fixtures.at(readings, 1000) == {"wifi": {"signal_dbm": -50}, "power": {"on_ac": True}}
    assert fixtures.at(readings, 2500) == {"wifi": {"signal_dbm": -70}, "power": {"on_ac": True}}
    now = fixtures.at(reversed(readings), 5000)  # order in the file does not matter
    assert now == {
        "wifi": {"signal_dbm": -70},
        "power": {"on_ac": False, "battery_ratio": 0.9},
        "cellular": None,
    }


def test_write_then_read_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "fx.jsonl"
    assert (
        fixtures.write(str(path), [{"ts_ms": 2, "power": {"on_ac": False}}, {"ts_ms": 1, **fixtures.HEALTHY}])
        == 2
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write("not json\n")
        handle.write('{"ts_ms": 3, "wifi": {"signal_dbm": "loud"}}\n')
    readings = fixtures.read(str(path))
    assert [r["ts_ms"] for r in readings] == [1, 2]
    with pytest.raises(ValueError, match=r"power\.on_ac"):
        fixtures.write(str(path), [{"ts_ms": 1, "power": {"on_ac": "yes"}}])
    assert fixtures.read(str(tmp_path / "missing.jsonl")) == []
