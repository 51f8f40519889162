"""One incident for a shared cause: grouping within the window, inhibition of the members' pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alerting_kit import Position, Recorder, collector, judgement, probe_round, states

from lifeline_collector.alerting.incidents import FleetCorrelator, FleetPolicy, _clustered
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector


@pytest.fixture
def setup(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Collector, Recorder]]:
    # Ratio 1.0: only fleet_min_positions (3) makes an incident in these tests unless said otherwise.
    yield from collector(tmp_path, clock, alerting={"fleet_min_ratio": 1.0})


def site(service: Collector, clock: ManualClock, name: str, count: int, first: int = 1) -> list[Position]:
    positions = [Position(service, clock, f"{name}-{n}", name, str(n)) for n in range(first, first + count)]
    for position in positions:
        position.healthy()
    return positions


def test_three_positions_losing_one_concentrator_make_one_incident(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    north = site(service, clock, "north", 10)
    for position in north[:7]:
        clock.advance(2)
        position.vpn_down()
    incidents = rec.pages("FleetIncident")
    assert len(incidents) == 1
    incident = incidents[0].alerts[0]
    assert incident.labels == {
        "alertname": "FleetIncident",
        "site": "north",
        "cause": "vpn",
        "dependency": "vpn.agency.example",
        "severity": "critical",
    }
    # The first two paged before there was anything to group; from the third on, no more pages.
    assert [g.alerts[0].labels["agent"] for g in rec.pages("PositionLayerFailed")] == ["north-1", "north-2"]
    active = {a.labels.get("agent", "fleet"): a for a in service.engine.active()}
    assert active["fleet"].annotations["summary"] == (
        "7 positions at north lost the VPN concentrator vpn.agency.example — agency-side problem, not the homes."
    )
    assert "Position 1 (north)" in active["fleet"].annotations["description"]
    # Every member's own alert stays visible, marked inhibited by the incident.
    for member in north[:7]:
        status = service.engine.status(active[member.id])
        assert status.inhibited_by == (incident.fingerprint,)
    assert service.engine.status(active["north-3"]).notified is False
    # Staggered recovery: with fewer than 3 left the incident holds for the window, so the
    # stragglers are not paged one by one; it resolves when the last member recovers.
    for position in north[:5]:
        clock.advance(1)
        position.healthy()
    assert states(service)[("FleetIncident", "north")] == "firing"
    clock.advance(30)
    north[5].vpn_down()
    north[6].vpn_down()
    assert states(service)[("FleetIncident", "north")] == "firing"
    firing = [g.alerts[0].labels["agent"] for g in rec.pages("PositionLayerFailed") if g.status == "firing"]
    assert firing == ["north-1", "north-2"]
    clock.advance(1)
    north[5].healthy()
    north[6].healthy()
    assert service.engine.active() == []
    resolved = [g.alerts[0].labels.get("agent", "fleet") for g in rec.delivered if g.status == "resolved"]
    assert sorted(resolved) == ["fleet", "north-1", "north-2"]  # only what was paged is resolved


def test_stragglers_are_paged_once_the_incident_has_ended(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    north = site(service, clock, "north", 4)
    for position in north[:3]:
        clock.advance(1)
        position.vpn_down()
    assert len(rec.pages("FleetIncident")) == 1
    clock.advance(1)
    north[0].healthy()
    north[1].healthy()
    for _ in range(7):  # north-3 stays down past the window: its own problem now
        clock.advance(10)
        for position in north:
            position.healthy() if position is not north[2] else position.vpn_down()
        service.tick()
    assert [g.status for g in rec.pages("FleetIncident")] == ["firing", "resolved"]
    assert [g.alerts[0].labels["agent"] for g in rec.pages("PositionLayerFailed")][-1] == "north-3"


def test_losses_spread_wider_than_the_window_are_not_one_incident(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    north = site(service, clock, "north", 6)
    for position in north[:3]:
        clock.advance(40)  # 80 s between the first and the third: separate home problems
        for other in north:
            if other is not position:
                if other in north[: north.index(position)]:
                    other.vpn_down()
                else:
                    other.healthy()
        position.vpn_down()
    assert rec.pages("FleetIncident") == []
    assert len(rec.pages("PositionLayerFailed")) == 3


def test_different_concentrators_at_one_site_form_a_site_wide_incident(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    north = site(service, clock, "north", 5)
    for n, position in enumerate(north[:3]):
        clock.advance(1)
        position.vpn_down(concentrator=f"home-vpn-router-{n}")
    (page,) = rec.pages("FleetIncident")
    assert page.alerts[0].labels["dependency"] == "(site-wide)"
    assert page.alerts[0].annotations["summary"] == (
        "3 positions at north lost the VPN tunnel at once — agency-side problem, not the homes."
    )


def test_home_side_failures_are_never_grouped(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, rec = setup
    north = site(service, clock, "north", 5)
    for position in north:
        clock.advance(1)
        position.report(
            judgement(
                position.now_ms,
                layers={layer: "failed" for layer in ("router", "internet", "vpn", "agency", "dns", "cad")},
                verdict=("router", "home router unreachable"),
            )
        )
    assert rec.pages("FleetIncident") == []
    assert len(rec.pages("PositionLayerFailed")) == 5


def test_same_cad_host_and_ratio_of_a_small_site(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock)  # default ratio 0.5: 2 of a 4-position site are enough
    service, rec = next(gen)
    east = site(service, clock, "east", 4)
    for position in east[:2]:
        clock.advance(1)
        ts = position.now_ms
        position.report(
            judgement(ts, layers={"cad": "failed"}, verdict=("cad", "CAD server not answering"))
            + probe_round(ts, "vpn.agency.example", "vpn", ok=True)
            + probe_round(ts, "cad.agency.example", "cad", ok=False)
        )
    (page,) = rec.pages("FleetIncident")
    assert page.alerts[0].labels["cause"] == "cad"
    assert page.alerts[0].annotations["summary"] == (
        "2 positions at east lost the CAD server cad.agency.example — agency-side problem, not the homes."
    )
    gen.close()


def test_positions_going_silent_together(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, rec = setup
    south = site(service, clock, "south", 4)
    clock.advance(16)
    south[3].healthy()  # one still reports
    service.tick()
    (page,) = rec.pages("FleetIncident")
    assert page.alerts[0].labels["cause"] == "silent"
    assert page.alerts[0].annotations["summary"].startswith("3 positions at south went silent within 60 s")
    # Their PositionSilent alerts exist but are not paged.
    assert sorted(a for (name, a), _s in states(service).items() if name == "PositionSilent") == [
        "south-1",
        "south-2",
        "south-3",
    ]
    assert rec.pages("PositionSilent") == []


def test_power_warnings_are_not_inhibited_by_an_incident(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    north = site(service, clock, "north", 3)
    for position in north:
        clock.advance(1)
        position.vpn_down()
    fleet = next(a for a in service.engine.active() if a.name == "FleetIncident")
    clock.advance(1)
    ts = north[2].now_ms
    north[2].report(
        judgement(
            ts,
            layers={
                "power": "degraded",
                "vpn": "failed",
                "agency": "failed",
                "dns": "failed",
                "cad": "failed",
            },
            verdict=("vpn", "VPN tunnel down, internet fine — on battery, home power out"),
        )
        + probe_round(ts, "vpn.agency.example", "vpn", ok=False)
    )
    power = next(a for a in service.engine.active() if a.labels.get("layer") == "power")
    # Not behind the incident — but the position's own critical page inhibits this warning.
    assert fleet.fingerprint not in service.engine.status(power).inhibited_by
    assert service.engine.status(power).inhibited_by != ()


def test_clustered_window_arithmetic() -> None:
    assert _clustered([0, 30, 60], 3, 60)
    assert not _clustered([0, 30, 61], 3, 60)
    assert _clustered([0, 100, 130, 160], 3, 60)
    assert not _clustered([0, 1], 3, 60)


def test_threshold_from_ratio_and_minimum() -> None:
    correlator = FleetCorrelator(FleetPolicy(min_positions=3, min_ratio=0.5), "http://x")
    assert correlator.threshold("empty") == 2  # never a "fleet" of one
    assert FleetCorrelator(FleetPolicy(min_positions=5, min_ratio=1.0), "http://x").threshold("x") == 2
