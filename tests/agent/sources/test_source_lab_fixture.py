"""The lab's scenario fixture files are exactly what the agent's fixture backends replay."""

from __future__ import annotations

import json
from pathlib import Path

from lifeline_agent.sources import cellular, power, wifi
from lifeline_agent.sources.base import FixtureFile
from lifeline_lab import fixtures as lab_fixtures


def test_a_lab_power_cut_timeline_replays_through_every_fixture_backend(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "scenario.jsonl"
    lines = [
        {"ts_ms": 1_000_000, **lab_fixtures.HEALTHY},
        # 30 s later: home power out, laptop on battery; LTE fading on the hotspot.
        {
            "ts_ms": 1_030_000,
            "power": {"on_ac": False, "battery_ratio": 0.42, "secs_left": 3600},
            "cellular": {"modem": "0", "access_technology": "5gnr", "signal_quality": 0.3, "rsrp_dbm": -112},
        },
    ]
    for line in lines:
        assert lab_fixtures.validate(line) == []
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fixture = FixtureFile(str(path), clock=lambda: now[0])

    healthy_wifi = lab_fixtures.HEALTHY["wifi"]
    assert wifi.FixtureBackend(fixture).read() == [
        wifi.WifiFacts(
            interface=healthy_wifi["interface"],
            connected=True,
            signal_dbm=float(healthy_wifi["signal_dbm"]),
            bitrate_bps=float(healthy_wifi["bitrate_bps"]),
            retries=healthy_wifi["retries"],
            backend="fixture",
        )
    ]
    assert power.FixtureBackend(fixture).read().on_ac is True
    assert cellular.FixtureBackend(fixture).read()[0].access_technology == "lte"

    now[0] = 1031.0
    on_battery = power.FixtureBackend(fixture).read()
    assert (on_battery.on_ac, on_battery.percent, on_battery.secs_left) == (False, 42.0, 3600.0)
    (modem,) = cellular.FixtureBackend(fixture).read()
    assert (modem.access_technology, modem.signal_quality, modem.rsrp) == ("5g", 0.3, -112.0)
    assert modem.connected
