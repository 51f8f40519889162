"""Facts arrive as the sources' own records (or typed states, or mappings); bad fields are named, not fatal."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeline_agent.health.facts import VpnFacts, coerce
from lifeline_agent.sources.base import FixtureFile
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.wifi import WifiFacts


def test_records_pass_through_untouched() -> None:
    record = PowerFacts(on_ac=False, percent=50.0, secs_left=3600.0)
    assert coerce("power", record) == (record, ())


def test_mappings_are_read_by_the_records_own_field_names() -> None:
    power, problems = coerce("power", {"on_ac": False, "percent": 42, "secs_left": 1800})
    assert problems == ()
    assert power == PowerFacts(on_ac=False, percent=42.0, secs_left=1800.0)
    vpn, problems = coerce("vpn", {"interface": "wg0", "kind": "wireguard", "handshake_age": "+Inf"})
    assert problems == ()
    assert isinstance(vpn, VpnFacts)
    assert vpn.kind == "wireguard"
    assert math.isinf(vpn.handshake_age or 0.0)


def test_a_name_the_record_does_not_have_is_named_never_read_as_none() -> None:
    """Another vocabulary (psutil's, WireGuard's) is not translated: each unknown name is a problem."""
    power, problems = coerce("power", {"power_plugged": False, "percent": 42, "secsleft": 1800})
    assert power == PowerFacts(percent=42.0)
    fields = "on_ac, percent, secs_left, backend"
    assert problems == (
        f"power.power_plugged: not a field of PowerFacts (fields: {fields})",
        f"power.secsleft: not a field of PowerFacts (fields: {fields})",
    )


def test_an_object_that_is_not_the_sources_record_is_refused() -> None:
    @dataclass
    class OtherWifi:  # a look-alike with other field names
        interface: str
        signal: float
        associated: bool

    assert coerce("wifi", OtherWifi("wlan0", -71.0, True)) == (
        None,
        ("wifi: expected a WifiFacts record (got OtherWifi)",),
    )


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
        (
            "bluetooth: unknown facts source (known: power, wifi, cellular, vpn, routes, interfaces, cad_sessions)",
        ),
    )
    assert coerce("power", 42) == (None, ("power: expected a PowerFacts record (got int)",))


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


def test_the_sources_own_fact_records_are_understood() -> None:
    """The contract with lifeline_agent.sources: their records are the model's facts, their states
    summarise into them."""
    from lifeline_agent.health.facts import RouteFacts
    from lifeline_agent.sources import cellular, interfaces, power, routes, vpn, wifi

    on_battery = power.PowerFacts(on_ac=False, percent=40.0, secs_left=900.0)
    assert coerce("power", on_battery) == (on_battery, ())
    assert coerce("power", on_battery)[0] is on_battery
    radio = wifi.WifiFacts("wlan0", True, -70.0, 1e8, 3)
    assert coerce("wifi", radio)[0] is radio
    modem = cellular.CellularFacts("0", True, "lte", -104.0, -12.0, 8.0, 0.6, state="connected")
    assert coerce("cellular", modem)[0] is modem

    none, _ = coerce("vpn", vpn.VpnState(()))
    assert none == VpnFacts(present=False)
    tunnels = vpn.VpnState(
        (
            vpn.Tunnel("tun0", "openvpn", link_up=True, up=False, state="RECONNECTING"),
            vpn.Tunnel("wg0", "wireguard", link_up=True, up=True, handshake_age=42.0),
        )
    )
    assert coerce("vpn", tunnels) == (VpnFacts(True, "wg0", "wireguard", True, 42.0), ())
    unreadable = vpn.VpnState((vpn.Tunnel("wg0", "wireguard", link_up=False, up=None),))
    assert coerce("vpn", unreadable)[0] == VpnFacts(True, "wg0", "wireguard", False, None)
    # The tunnel's byte counters (WireGuard's rx_bytes/tx_bytes; OpenVPN's) reach the model.
    counted = vpn.VpnState((vpn.Tunnel("wg0", "wireguard", True, True, 5.0, rx_bytes=9100, tx_bytes=20480),))
    assert coerce("vpn", counted)[0] == VpnFacts(True, "wg0", "wireguard", True, 5.0, 9100.0, 20480.0)

    links = interfaces.InterfacesState(
        (
            interfaces.InterfaceFacts("eth0", "primary", True, up=False),
            interfaces.InterfaceFacts("wlan0", "primary", True, up=True),
            interfaces.InterfaceFacts("usb0", "backup", False),
        )
    )
    assert coerce("interfaces", links) == (RouteFacts("wlan0", True, "usb0", False), ())

    state = routes.RoutesState((), (), ("wg0",), "wlan0", "usb0", on_backup=True)
    assert coerce("routes", state) == (RouteFacts("wlan0", None, "usb0", None, on_backup=True), ())


def test_interfaces_and_routes_together_judge_the_link(position: Callable[..., Any]) -> None:
    from lifeline_agent.health.facts import RouteFacts

    pos = position()
    pos.facts["routes"] = RouteFacts("eth0", None, "usb0", None, on_backup=False)
    pos.facts["interfaces"] = RouteFacts("eth0", False, "usb0", True)
    a = pos.second()
    assert a.layer("link").state == "failed"
    assert a.layer("link").reason == "home network link down (eth0)"


def test_what_the_sources_read_is_what_the_model_judges(tmp_path: Path, position: Callable[..., Any]) -> None:
    """The real sources over a fixture file, each reading handed to the model as the agent does:
    each source's own record reaches the model whole, so a field the two sides name differently
    cannot quietly turn into None."""
    from lifeline_agent.sources import cellular, power, wifi

    path = tmp_path / "scenario.jsonl"
    path.write_text(
        '{"ts_ms": 1000, "power": {"on_ac": false, "battery_ratio": 0.42, "secs_left": 3600},'
        ' "wifi": {"interface": "wlan0", "signal_dbm": -81, "bitrate_bps": 6000000},'
        ' "cellular": {"modem": "0", "access_technology": "lte", "rsrp_dbm": -121, "sinr_db": -4}}\n'
    )
    fixture = FixtureFile(str(path))
    pos = position()
    for name, source in (
        ("power", power.PowerSource([power.FixtureBackend(fixture)])),
        ("wifi", wifi.WifiSource([wifi.FixtureBackend(fixture)])),
        ("cellular", cellular.CellularSource([cellular.FixtureBackend(fixture)])),
    ):
        reading = source.read()
        assert reading.ok, (name, reading.error)
        assert pos.model.observe_facts(name, reading.facts) == (), name
        assert coerce(name, reading.facts) == (reading.facts, ())
        assert coerce(name, reading.facts)[0] is reading.facts
        pos.facts[name] = reading.facts
    on_battery = pos.facts["power"]
    assert isinstance(on_battery, PowerFacts)
    assert (on_battery.on_ac, on_battery.percent, on_battery.secs_left) == (False, 42.0, 3600.0)
    run = pos.run(20)
    assert "degraded" in [a.layer("power").state for a in run]
    assert any("Wi-Fi signal weak" in a.layer("link").reason for a in run)
