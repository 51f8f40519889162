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
        (
            "bluetooth: unknown facts source (known: power, wifi, cellular, vpn, routes, interfaces, cad_sessions)",
        ),
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


def test_the_sources_own_fact_records_are_understood() -> None:
    """The contract with lifeline_agent.sources: their records map onto the model's facts."""
    from lifeline_agent.health.facts import CellularFacts, RouteFacts
    from lifeline_agent.sources import cellular, interfaces, power, routes, vpn, wifi

    assert coerce("power", power.PowerFacts(on_ac=False, battery_percent=40.0, seconds_left=900.0)) == (
        PowerFacts(False, 40.0, 900.0),
        (),
    )
    assert coerce("wifi", wifi.WifiFacts("wlan0", True, -70.0, 1e8, 3)) == (
        WifiFacts("wlan0", True, -70.0, 1e8),
        (),
    )
    modem = cellular.CellularFacts("0", "connected", True, "lte", 0.6, -104.0, -12.0, 8.0)
    assert coerce("cellular", modem) == (CellularFacts("0", True, "lte", -104.0, -12.0, 8.0, 0.6), ())

    none, _ = coerce("vpn", vpn.VpnState(()))
    assert none == VpnFacts(present=False)
    tunnels = vpn.VpnState(
        (
            vpn.VpnFacts("tun0", "openvpn", link_up=True, up=False, state="RECONNECTING"),
            vpn.VpnFacts("wg0", "wireguard", link_up=True, up=True, handshake_age=42.0),
        )
    )
    assert coerce("vpn", tunnels) == (VpnFacts(True, "wg0", "wireguard", True, 42.0), ())
    unreadable = vpn.VpnState((vpn.VpnFacts("wg0", "wireguard", link_up=False, up=None),))
    assert coerce("vpn", unreadable)[0] == VpnFacts(True, "wg0", "wireguard", False, None)
    # The tunnel's byte counters (WireGuard's rx_bytes/tx_bytes; OpenVPN's) reach the model.
    counted = vpn.VpnState(
        (vpn.VpnFacts("wg0", "wireguard", True, True, 5.0, rx_bytes=9100, tx_bytes=20480),)
    )
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
