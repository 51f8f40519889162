"""Facts from the sources arrive as records, objects or mappings; bad fields are named, not fatal."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lifeline_agent.health.facts import PowerFacts, VpnFacts, WifiFacts, coerce


def test_records_pass_through_untouched() -> None:
    record = PowerFacts(on_ac=False, percent=50.0, secs_left=3600.0)
    assert coerce("power", record) == (record, ())


def test_mappings_with_psutil_and_wireguard_names_are_read() -> None:
    power, problems = coerce("power", {"power_plugged": False, "percent": 42, "secsleft": 1800})
    assert problems == ()
    assert power == PowerFacts(on_ac=False, percent=42.0, secs_left=1800.0)
    vpn, problems = coerce(
        "vpn", {"interface": "wg0", "vpn_type": "wireguard", "handshake_age_seconds": "+Inf"}
    )
    assert problems == ()
    assert isinstance(vpn, VpnFacts)
    assert vpn.kind == "wireguard"
    assert math.isinf(vpn.handshake_age or 0.0)


def test_any_object_with_the_field_names_is_read() -> None:
    @dataclass
    class SourcesWifi:  # what a sources module might hand over
        interface: str
        signal: float
        associated: bool
        bitrate: float | None = None

    wifi, problems = coerce("wifi", SourcesWifi("wlan0", -71.0, True))
    assert problems == ()
    assert wifi == WifiFacts("wlan0", True, -71.0, None)


def test_a_bad_field_is_named_and_the_rest_is_kept() -> None:
    wifi, problems = coerce("wifi", {"interface": "wlan0", "signal_dbm": "strong", "connected": "yes"})
    assert wifi == WifiFacts(interface="wlan0")
    assert problems == (
        "wifi.connected: must be true or false (got 'yes')",
        "wifi.signal_dbm: must be a number (got 'strong')",
    )
    _, problems = coerce("power", {"percent": float("nan")})
    assert problems == ("power.percent: must be a number (got NaN)",)


def test_unknown_sources_and_non_records_are_problems_not_crashes() -> None:
    assert coerce("bluetooth", {}) == (
        None,
        ("bluetooth: unknown facts source (known: power, wifi, cellular, vpn, routes)",),
    )
    assert coerce("power", 42) == (None, ("power: expected a record of facts (got int)",))


def test_the_model_reports_problems_and_keeps_judging(position: Callable[..., Any]) -> None:
    pos = position()
    problems = pos.model.observe_facts(
        "wifi", {"interface": "wlan0", "signal_dbm": "n/a", "connected": False}
    )
    assert problems == ("wifi.signal_dbm: must be a number (got 'n/a')",)
    del pos.facts["wifi"]
    pos.model.observe_facts("wifi", {"interface": "wlan0", "signal_dbm": "n/a", "connected": False})
    a = pos.second()
    assert a.layer("link").state == "failed"
    assert a.layer("link").reason == "Wi-Fi disconnected"
    assert pos.model.observe_facts("teleporter", object()) != ()


def test_stale_facts_count_as_no_data(position: Callable[..., Any]) -> None:
    pos = position()
    del pos.facts["power"]
    pos.model.observe_facts("power", PowerFacts(on_ac=False, percent=90.0))
    states = [a.layer("power").state for a in pos.run(45)]
    assert "degraded" in states[:10]
    assert states[-1] == "unknown"  # the power source stopped reporting 30 s ago
