"""The shared shapes: samples checked against the catalog, fixture files, backends, the registry."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from lifeline_agent.config import parse
from lifeline_agent.sources import KINDS, REGISTRY, build_sources, provider_samples
from lifeline_agent.sources.base import (
    Availability,
    FixtureFile,
    UnavailableSource,
    first_available,
    read_first,
    sample,
)
from lifeline_agent.sources.errors import SourceParseError, SourceReadError, SourceUnavailable
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


def test_fixture_file_newest_line_per_source_wins_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "fixture.jsonl"
    path.write_text(
        '{"source": "wifi", "signal_dbm": -50}\n# a comment\n\n{"source": "power", "on_ac": true}\n'
        '{"source": "wifi", "signal_dbm": -80}\n'
    )
    fixture = FixtureFile(str(path))
    rec = fixture.latest("wifi")
    assert rec is not None
    assert rec.number("signal_dbm") == -80.0
    assert fixture.latest("cellular") is None
    with path.open("a") as fh:
        fh.write('{"source": "wifi", "signal_dbm": -61, "extra": 1}\n')
    rec = fixture.latest("wifi")
    assert rec is not None
    assert rec.number("signal_dbm") == -61.0
    with pytest.raises(SourceParseError, match=r"fixture.jsonl:6\.extra: unknown key"):
        rec.finish()


@pytest.mark.parametrize(
    ("line", "message"),
    [("{not json", r":2: not JSON"), ('["wifi"]', r':2: must be an object with a "source" string')],
)
def test_fixture_file_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"source": "power"}\n' + line + "\n")
    with pytest.raises(SourceParseError, match=message):
        FixtureFile(str(path)).latest("power")


def test_fixture_record_type_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"source": "wifi", "signal_dbm": "strong", "retries": 1.5}) + "\n")
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
        '{"source": "wifi", "interface": "wlan0", "signal_dbm": -71, "bitrate_bps": 65000000, "retries": 3}\n'
        '{"source": "power", "on_ac": false, "battery_percent": 64, "seconds_left": 5400}\n'
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
