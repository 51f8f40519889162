"""Rules from the agent's judgement on an injected clock: CAD at risk, a layer failed, no backup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alerting_kit import INF, Position, Recorder, collector, judgement, probe_round, states

from lifeline_collector.alerting.model import AlertState
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire import Sample


@pytest.fixture
def setup(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Collector, Recorder]]:
    yield from collector(tmp_path, clock, server={"public_url": "https://lifeline.example"})


def degrading(position: Position, risk: float, ttl: float, loss: float, ready: float = 1.0) -> None:
    ts = position.now_ms
    position.report(
        judgement(
            ts,
            layers={"vpn": "degraded"},
            verdict=("vpn", "VPN tunnel losing packets"),
            risk=risk,
            ttl=ttl,
            ready=ready,
        )
        + probe_round(ts, "vpn.agency.example", "vpn", ok=True, loss=loss)
    )


def test_cad_at_risk_warns_then_pages_then_resolves(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    position.healthy()
    degrading(position, risk=0.3, ttl=300, loss=0.02)  # below the warn band: nothing
    assert service.engine.active() == []
    clock.advance(1)
    degrading(position, risk=0.6, ttl=240, loss=0.06)
    (warning,) = rec.pages("CadAtRisk")
    alert = warning.alerts[0]
    assert alert.labels == {
        "alertname": "CadAtRisk",
        "agent": "pos-12",
        "site": "north",
        "position": "12",
        "severity": "warning",
    }
    assert alert.annotations["summary"] == (
        "Position 12 (north) will likely lose CAD within 4 min — VPN tunnel losing packets (loss 6.0 %);"
        " hotspot ready."
    )
    assert alert.annotations["link"] == "https://lifeline.example/positions/pos-12"
    assert "60 % risk" in alert.annotations["description"]
    clock.advance(1)
    degrading(position, risk=0.7, ttl=45, loss=0.18)  # time to loss ≤ 60 s: pages
    critical = [g for g in rec.pages("CadAtRisk") if g.alerts[0].severity == "critical"]
    assert len(critical) == 1
    assert critical[0].alerts[0].annotations["summary"] == (
        "Position 12 (north) will likely lose CAD within 45 s — VPN tunnel losing packets (loss 18 %);"
        " hotspot ready."
    )
    # The warning is still active but inhibited by the critical one of the same position.
    status = {a.severity: service.engine.status(a) for a in service.engine.active()}
    assert status["warning"].inhibited_by == (critical[0].alerts[0].fingerprint,)
    assert status["critical"].inhibited_by == ()
    clock.advance(1)
    position.healthy()
    resolved = [g for g in rec.delivered if g.status == "resolved"]
    assert sorted(g.alerts[0].severity for g in resolved) == ["critical", "warning"]
    assert all(g.alerts[0].ends_at == clock.now() for g in resolved)
    assert service.engine.active() == []


def test_risk_with_no_time_left_says_cad_is_going_now(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    position.healthy()
    clock.advance(1)
    degrading(position, risk=0.6, ttl=45, loss=0.2)
    assert rec.pages("CadAtRisk")
    clock.advance(1)
    degrading(position, risk=1.0, ttl=0, loss=0.6)  # the warning out stays, in today's words
    summaries = {a.annotations["summary"] for a in service.engine.active() if a.name == "CadAtRisk"}
    assert summaries == {
        "Position 12 (north) is losing CAD now — VPN tunnel losing packets (loss 60 %); hotspot ready."
    }


def test_a_hard_cut_is_not_paged_as_a_prediction(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    position.healthy()
    clock.advance(1)
    # No warning before: the risk jumps to certain with no time left. PositionLayerFailed will name
    # the broken layer a moment later; a "losing CAD within 0 s" page first would be a second page.
    degrading(position, risk=1.0, ttl=0, loss=1.0)
    assert rec.pages("CadAtRisk") == []
    assert [a for a in service.engine.active() if a.name == "CadAtRisk"] == []


def test_stable_position_with_high_risk_but_infinite_time_is_not_paged(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-3", "north", "3")
    degrading(position, risk=0.9, ttl=INF, loss=0.02)
    assert service.engine.active() == []
    assert rec.delivered == []


def test_hard_cut_pages_on_the_priority_batch_and_names_the_layer(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    position.healthy()
    clock.advance(1)
    ts = position.now_ms
    position.report(
        judgement(
            ts,
            layers={layer: "failed" for layer in ("router", "internet", "vpn", "agency", "dns", "cad")},
            verdict=("router", "home router unreachable"),
            risk=1.0,
            ttl=0.0,
            ready=0.0,
        ),
        priority=True,
    )
    # for = 0 s: firing on that very ingest, no tick needed.
    (page,) = rec.pages("PositionLayerFailed")
    alert = page.alerts[0]
    assert alert.state is AlertState.FIRING
    assert (alert.labels["layer"], alert.severity) == ("router", "critical")
    assert (
        alert.annotations["summary"]
        == "Position 12 (north) lost CAD — home router unreachable; hotspot not ready."
    )
    assert rec.pages("CadAtRisk") == []  # already lost: no "will lose" on top
    clock.advance(1)
    position.healthy()
    assert [g.status for g in rec.pages("PositionLayerFailed")] == ["firing", "resolved"]


def test_vpn_down_with_hotspot_ready(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-7", "south", "7")
    position.vpn_down()
    (page,) = rec.pages("PositionLayerFailed")
    assert page.alerts[0].annotations["summary"] == (
        "Position 7 (south) lost CAD — VPN tunnel down, internet fine; hotspot ready."
    )
    assert "switch to the hotspot" in page.alerts[0].annotations["description"]


def test_running_on_the_hotspot_is_a_warning_not_a_lost_position(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-8", "north", "8")
    position.report(
        judgement(
            position.now_ms,
            layers={"internet": "failed"},
            verdict=("internet", "home internet (ISP) down, router fine — running on the backup path"),
            ready=1.0,
            on_backup=1.0,
        )
    )
    (page,) = rec.pages("PositionLayerFailed")
    assert page.alerts[0].severity == "warning"
    assert page.alerts[0].annotations["summary"] == (
        "Position 8 (north) is running on the hotspot — home internet (ISP) down, router fine — running on the"
        " backup path; CAD still up, no second path left."
    )


def test_on_battery_is_a_warning_with_battery_figures(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-4", "north", "4")
    ts = position.now_ms
    position.report(
        [
            *judgement(ts, layers={"power": "degraded"}, verdict=("power", "on battery")),
            Sample("lifeline_battery_ratio", 0.64, ts),
            Sample("lifeline_battery_time_left_seconds", 3120.0, ts),
        ]
    )
    (page,) = rec.pages("PositionLayerFailed")
    assert (page.alerts[0].labels["layer"], page.alerts[0].severity) == ("power", "warning")
    assert page.alerts[0].annotations["summary"] == (
        "Position 4 (north) is on battery — home power out (battery 64 %, 52 min left); CAD still up, hotspot ready."
    )


def test_failover_not_ready_waits_for_its_hold(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-5", "north", "5")

    def backup_failed() -> None:
        clock.advance(10)
        position.report(
            judgement(
                position.now_ms,
                layers={"backup": "failed"},
                verdict=("backup", "backup path (hotspot) not ready — primary fine"),
                ready=0.0,
            )
        )
        service.tick()

    for _ in range(6):
        backup_failed()
    # 50 s held: still pending (default for = 1 m, low urgency)
    assert states(service) == {("FailoverNotReady", "pos-5"): "pending"}
    assert rec.delivered == []
    backup_failed()
    assert states(service) == {("FailoverNotReady", "pos-5"): "firing"}
    (page,) = rec.pages("FailoverNotReady")
    assert page.alerts[0].labels["urgency"] == "low"
    assert page.alerts[0].annotations["summary"] == (
        "Position 5 (north) has no working backup — backup path (hotspot) not ready; primary fine, CAD up."
    )
    # The primary failing as well: the backup alert gives way to the lost position.
    clock.advance(1)
    position.vpn_down()
    assert ("FailoverNotReady", "pos-5") not in states(service)
    assert states(service)[("PositionLayerFailed", "pos-5")] == "firing"


def test_latest_verdict_wins_over_older_label_sets(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-6", "north", "6")
    position.vpn_down()
    clock.advance(1)
    position.healthy()  # a new verdict label set; the old one stays in the store, older
    assert service.engine.active() == []
    assert [g.status for g in rec.pages("PositionLayerFailed")] == ["firing", "resolved"]


def test_configured_hold_keeps_an_alert_pending(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock, alerting={"for": {"PositionLayerFailed": "5s"}})
    service, rec = next(gen)
    position = Position(service, clock, "pos-9", "north", "9")
    position.vpn_down()
    assert states(service) == {("PositionLayerFailed", "pos-9"): "pending"}
    clock.advance(4)
    position.vpn_down()
    assert rec.delivered == []
    clock.advance(1)
    service.tick()
    assert states(service)[("PositionLayerFailed", "pos-9")] == "firing"
    assert len(rec.pages("PositionLayerFailed")) == 1
    gen.close()


def test_agency_dns_down_with_cad_up_is_a_warning_not_a_page(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    position.healthy()
    clock.advance(1)
    position.report(
        judgement(position.now_ms, layers={"dns": "failed"}, verdict=("dns", "agency DNS not answering")),
        priority=True,
    )
    (alert,) = [a for a in service.engine.active() if a.name == "PositionLayerFailed"]
    assert alert.labels["severity"] == "warning"
    assert alert.labels["layer"] == "dns"
    assert alert.annotations["summary"] == (
        "Position 12 (north): agency DNS not answering — CAD still up; a reconnect would fail until DNS answers."
    )
    clock.advance(1)
    # When CAD goes too, it is a page like any other lost position.
    position.report(
        judgement(
            position.now_ms,
            layers={"dns": "failed", "cad": "failed"},
            verdict=("dns", "agency DNS not answering"),
        ),
        priority=True,
    )
    severities = {a.labels["severity"] for a in service.engine.active() if a.name == "PositionLayerFailed"}
    assert "critical" in severities
