"""The shared shapes: samples checked against the catalog, fixture files, backends, the registry."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from lifeline_agent.config import parse
from lifeline_agent.errors import SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.sources import KINDS, REGISTRY, build_sources, provider_samples
from lifeline_agent.sources.base import (
    Availability,
    FixtureFile,
    UnavailableSource,
    first_available,
    read_first,
    sample,
)
from lifeline_wire.catalog import CATALOG


def test_sample_accepts_catalog_names_with_their_labels() -> None:
    s = sample("lifeline_wifi_signal_dbm", -58, interface="wlan0")
    assert (s.name, s.labels, s.value) == ("lifeline_wifi_signal_dbm", {"interface": "wlan0"}, -58.0)
    assert sample(
        "lifeline_vpn_handshake_age_seconds", math.inf, interface="wg0", vpn_type="wireguard"
    ).value == (math.inf)


@pytest.mark.parametrize(
    ("name", "labels", "message"),
    [
        ("lifeline_wifi_signal", {"interface": "wlan0"}, "not declared"),
        ("lifeline_wifi_signal_dbm", {}, "takes labels"),
        ("lifeline_wifi_signal_dbm", {"interface": "wlan0", "ssid": "home"}, "takes labels"),
    ],
)
def test_sample_rejects_undeclared_names_and_labels(name: str, labels: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample(name, 1.0, **labels)


def test_sample_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        sample("lifeline_power_on_ac", math.nan)


def test_every_registered_source_declares_catalog_metrics_and_is_listed() -> None:
    assert set(KINDS) == set(REGISTRY)
    for spec in REGISTRY.values():
        assert spec.metrics, spec.kind
        assert all(m in CATALOG for m in spec.metrics)
        assert spec.backends
        assert spec.privileges
        assert spec.summary


def test_fixture_file_replays_each_section_on_its_own_timeline(tmp_path: Path) -> None:
    now = [100.0]
    path = tmp_path / "fixture.jsonl"
    # Written out of order, with a future line: the replay follows ts_ms, not the file order.
    path.write_text(
        '{"ts_ms": 150000, "wifi": {"signal_dbm": -80}}\n# a comment\n\n'
        '{"ts_ms": 90000, "wifi": {"signal_dbm": -50}, "power": {"on_ac": true}}\n'
        '{"ts_ms": 120000, "power": null}\n'
    )
    fixture = FixtureFile(str(path), clock=lambda: now[0])
    rec = fixture.latest("wifi")
    assert rec is not None
    assert rec.number("signal_dbm") == -50.0
    power = fixture.latest("power")
    assert power is not None
    assert power.flag("on_ac") is True
    assert fixture.latest("cellular") is None
    now[0] = 130.0
    assert fixture.latest("power") is None  # null: the hardware is gone
    rec = fixture.latest("wifi")
    assert rec is not None
    assert rec.number("signal_dbm") == -50.0  # the -80 line lies in the future still
    now[0] = 151.0
    rec = fixture.latest("wifi")
    assert rec is not None
    assert rec.number("signal_dbm") == -80.0
    with path.open("a") as fh:
        fh.write('{"ts_ms": 151000, "wifi": {"signal_dbm": -61, "extra": 1}}\n')
    rec = fixture.latest("wifi")
    assert rec is not None
    assert rec.number("signal_dbm") == -61.0
    with pytest.raises(SourceParseError, match=r"fixture.jsonl:6\.wifi\.extra: unknown key"):
        rec.finish()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r":2: not JSON"),
        ('["wifi"]', r':2: must be an object with a "ts_ms" number'),
        ('{"wifi": {}}', r":2\.ts_ms: must be Unix milliseconds"),
        ('{"ts_ms": 1, "radio": {}}', r":2\.radio: unknown section"),
        ('{"ts_ms": 1, "power": 3}', r":2\.power: must be an object or null"),
    ],
)
def test_fixture_file_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"ts_ms": 1, "power": {}}\n' + line + "\n")
    with pytest.raises(SourceParseError, match=message):
        FixtureFile(str(path)).latest("power")


def test_fixture_record_type_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"ts_ms": 1, "wifi": {"signal_dbm": "strong", "retries": 1.5}}) + "\n")
    rec = FixtureFile(str(path)).latest("wifi")
    assert rec is not None
    with pytest.raises(SourceParseError, match=r"\.signal_dbm: must be a number"):
        rec.number("signal_dbm")
    with pytest.raises(SourceParseError, match=r"\.retries: must be an integer"):
        rec.integer("retries")


def test_missing_fixture_file_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(SourceReadError, match="fixture file"):
        FixtureFile(str(tmp_path / "absent.jsonl")).latest("wifi")


class _Backend:
    def __init__(self, name: str, ok: bool) -> None:
        self.name = name
        self.ok = ok

    def available(self) -> Availability:
        return Availability(self.ok, "" if self.ok else f"{self.name} missing")

    def value(self) -> str:
        if not self.ok:
            raise SourceUnavailable(f"{self.name} missing")
        return self.name


def test_first_available_and_read_first_fall_through_in_order() -> None:
    backends = (_Backend("nl80211", False), _Backend("proc", True))
    assert first_available(backends) == Availability(True, "proc")
    value, used = read_first(backends, lambda b: b.value())
    assert (value, used.name) == ("proc", "proc")
    nothing = (_Backend("a", False), _Backend("b", False))
    assert first_available(nothing) == Availability(False, "a: a missing; b: b missing")
    with pytest.raises(SourceUnavailable, match="a: a missing; b: b missing"):
        read_first(nothing, lambda b: b.value())


def test_unavailable_source_reports_instead_of_reading_healthy() -> None:
    src = UnavailableSource("wifi", "needs Linux (running on win32)")
    assert src.available() == Availability(False, "needs Linux (running on win32)")
    reading = src.read()
    assert not reading.ok
    assert reading.samples == ()
    assert reading.facts is None


def test_build_sources_follows_providers_and_reports_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fixture = tmp_path / "scenario.jsonl"
    fixture.write_text(
        '{"ts_ms": 1000, "wifi": {"interface": "wlan0", "signal_dbm": -71, "bitrate_bps": 65000000, "retries": 3},'
        ' "power": {"on_ac": false, "battery_ratio": 0.64, "secs_left": 5400}}\n'
    )
    config = parse(
        {
            "agent": {"id": "pos-17"},
            "providers": {
                "wifi": "fixture",
                "cellular": "off",
                "power": "fixture",
                "fixture_file": str(fixture),
                "cad_sessions": False,
            },
        }
    )
    with caplog.at_level(logging.INFO, logger="lifeline_agent.sources.registry"):
        sources = build_sources(config)
    names = [s.name for s in sources]
    assert "cellular" not in names
    assert "cad_sessions" not in names
    assert {"wifi", "power", "interfaces", "vpn", "routes"} <= set(names)
    by_name = {s.name: s for s in sources}
    wifi = by_name["wifi"].read()
    assert wifi.ok
    assert wifi.facts.signal_dbm == -71.0
    power = by_name["power"].read()
    assert power.ok
    assert power.facts.on_ac is False
    availability = {s.labels["provider"]: s.value for s in provider_samples(sources)}
    assert availability["wifi"] == 1.0
    assert availability["power"] == 1.0
    assert "source cellular is off" in caplog.text


def test_build_sources_reports_a_missing_fixture_file_as_unavailable(tmp_path: Path) -> None:
    config = parse(
        {
            "agent": {"id": "pos-17"},
            "providers": {"wifi": "fixture", "cellular": "off", "fixture_file": str(tmp_path / "gone.jsonl")},
        }
    )
    wifi = next(s for s in build_sources(config) if s.name == "wifi")
    assert wifi.available().ok is False
    assert "gone.jsonl missing" in wifi.available().reason
    assert not wifi.read().ok
    samples = provider_samples([wifi])
    assert [(s.labels, s.value) for s in samples] == [({"provider": "wifi"}, 0.0)]
