"""Rules from the agent's judgement on an injected clock: CAD at risk, a layer failed, no backup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from alerting_kit import INF, Position, Recorder, collector, judgement, probe_round, states

from lifeline_collector.alerting.alert import Alert, AlertState
from lifeline_collector.alerting.rules.cad_at_risk import CadAtRisk
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire import Sample


@dataclass
class Scene:
    """A collector on the manual clock, what it delivered, and the positions that report to it."""

    service: Collector
    rec: Recorder
    clock: ManualClock

    def position(self, number: str, site: str = "north", *, healthy_first: bool = False) -> Position:
        """Agent ``pos-<number>``; with ``healthy_first`` it has reported healthy a second ago."""
        position = Position(self.service, self.clock, f"pos-{number}", site, number)
        if healthy_first:
            position.healthy()
            self.clock.advance(1)
        return position

    def only_page(self, name: str) -> Alert:
        """The alert of the one notification ``name`` has sent so far."""
        (page,) = self.rec.pages(name)
        return page.alerts[0]

    def active(self, name: str) -> list[Alert]:
        return [a for a in self.service.engine.active() if a.name == name]


@pytest.fixture
def scene(tmp_path: Path, clock: ManualClock) -> Iterator[Scene]:
    for service, rec in collector(tmp_path, clock, server={"public_url": "https://lifeline.example"}):
        yield Scene(service, rec, clock)


def degrading(position: Position, risk: float, ttl: float, loss: float, ready: float = 1.0) -> None:
    ts = position.now_ms
    position.report(
        judgement(
            ts,
            layers={"vpn": "degraded"},
            verdict=("vpn", "VPN tunnel losing packets"),
            cause="loss",
            risk=risk,
            ttl=ttl,
            ready=ready,
        )
        + probe_round(ts, "vpn.agency.example", "vpn", ok=True, loss=loss)
    )


def layer_failed(
    position: Position,
    layer: str,
    words: str,
    *,
    ready: float = 1.0,
    on_backup: float = 0.0,
    priority: bool = False,
) -> None:
    """The agent's judgement that ``layer`` alone failed, in ``words`` (its verdict)."""
    judged = judgement(
        position.now_ms,
        layers={layer: "failed"},
        verdict=(layer, words),
        cause="down",
        ready=ready,
        on_backup=on_backup,
    )
    position.report(judged, priority=priority)


def test_cad_at_risk_warns_then_pages_then_resolves(scene: Scene) -> None:
    service, rec, clock = scene.service, scene.rec, scene.clock
    position = scene.position("12")
    position.healthy()
    degrading(position, risk=0.3, ttl=300, loss=0.02)  # below the warn band: nothing
    assert service.engine.active() == []
    clock.advance(1)
    degrading(position, risk=0.6, ttl=240, loss=0.06)
    alert = scene.only_page("CadAtRisk")
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


def test_risk_with_no_time_left_says_cad_is_going_now(scene: Scene) -> None:
    position = scene.position("12", healthy_first=True)
    degrading(position, risk=0.6, ttl=45, loss=0.2)
    assert scene.rec.pages("CadAtRisk")
    scene.clock.advance(1)
    degrading(position, risk=1.0, ttl=0, loss=0.6)  # the warning out stays, in today's words
    assert {a.annotations["summary"] for a in scene.active("CadAtRisk")} == {
        "Position 12 (north) is losing CAD now — VPN tunnel losing packets (loss 60 %); hotspot ready."
    }


def _measured_vpn(position: Position, words: str, cause: str | None) -> None:
    """A degraded VPN tunnel whose probes show loss, a slow round trip and jitter at once, so the
    figure a page quotes tells which of them the collector chose."""
    ts = position.now_ms
    labels = {"target": "vpn.agency.example", "role": "vpn", "path": "tunnel", "kind": "icmp"}
    position.report(
        judgement(ts, layers={"vpn": "degraded"}, verdict=("vpn", words), cause=cause, risk=0.6, ttl=240)
        + probe_round(ts, "vpn.agency.example", "vpn", ok=True, loss=0.06)
        + [
            Sample("lifeline_probe_rtt_seconds", 0.32, ts, {**labels, "stat": "avg"}),
            Sample("lifeline_probe_jitter_seconds", 0.045, ts, labels),
        ]
    )


@pytest.mark.parametrize(
    ("words", "cause", "figure"),
    [
        # The sentence says one thing, the cause another: the figure follows the cause.
        ("VPN tunnel slow", "loss", "loss 6.0 %"),
        ("VPN tunnel losing packets", "latency", "RTT 320 ms"),
        ("VPN tunnel losing packets", "jitter", "jitter 45 ms"),
        # An agent older than the cause field: generic for its layer, whatever its sentence says.
        ("VPN tunnel slow", None, "loss 6.0 %"),
        ("VPN tunnel unsteady", None, "loss 6.0 %"),
    ],
)
def test_the_figure_is_chosen_by_the_verdicts_cause_never_by_its_words(
    scene: Scene, words: str, cause: str | None, figure: str
) -> None:
    position = scene.position("12", healthy_first=True)
    _measured_vpn(position, words, cause)
    assert scene.only_page("CadAtRisk").annotations["summary"] == (
        f"Position 12 (north) will likely lose CAD within 4 min — {words} ({figure}); hotspot ready."
    )


def test_a_trend_without_a_broken_layer_is_quoted_only_when_the_cause_says_trend(scene: Scene) -> None:
    words = "packet loss on the path to CAD rising"
    for number, cause, said in (("12", "trend", words), ("13", None, "connection quality falling")):
        position = scene.position(number, healthy_first=True)
        position.report(judgement(position.now_ms, verdict=("none", words), cause=cause, risk=0.6, ttl=240))
        (page,) = [p for p in scene.rec.pages("CadAtRisk") if p.alerts[0].labels["agent"] == f"pos-{number}"]
        assert f"— {said}; hotspot ready." in page.alerts[0].annotations["summary"]


def test_a_hard_cut_is_not_paged_as_a_prediction(scene: Scene) -> None:
    position = scene.position("12", healthy_first=True)
    # No warning before: the risk jumps to certain with no time left. PositionLayerFailed names
    # the broken layer a moment later; a "losing CAD within 0 s" page first would be a second page.
    degrading(position, risk=1.0, ttl=0, loss=1.0)
    scene.clock.advance(2)
    scene.service.tick()
    assert scene.rec.pages("CadAtRisk") == []
    assert scene.active("CadAtRisk") == []
    layer_failed(position, "vpn", "VPN tunnel down", priority=True)
    scene.clock.advance(CadAtRisk.cut_grace)
    scene.service.tick()
    assert [g.alerts[0].name for g in scene.rec.delivered] == ["PositionLayerFailed"]


def test_a_dying_path_no_layer_names_is_paged_once_the_cut_grace_is_over(scene: Scene) -> None:
    # Loss rising so fast that the agent's trend saw it only past the level CAD survives: certain
    # loss, no time left, and yet no layer judged failed (some packets still come back). After the
    # grace in which a hard cut would have been named, the supervisor hears it — from the 1 s tick,
    # before the position's next report.
    position = scene.position("12", healthy_first=True)
    degrading(position, risk=1.0, ttl=0, loss=0.55)
    for _ in range(int(CadAtRisk.cut_grace) - 1):
        scene.clock.advance(1)
        scene.service.tick()
        assert scene.rec.pages("CadAtRisk") == []
    scene.clock.advance(1)
    scene.service.tick()
    (page,) = scene.rec.pages("CadAtRisk")  # the critical one; it inhibits the warning
    assert page.alerts[0].severity == "critical"
    assert page.alerts[0].annotations["summary"] == (
        "Position 12 (north) is losing CAD now — VPN tunnel losing packets (loss 55 %); hotspot ready."
    )
    # A grace is counted once per episode: healthy again, then the same again waits again.
    scene.clock.advance(1)
    position.healthy()
    scene.clock.advance(1)
    degrading(position, risk=1.0, ttl=2, loss=0.6)
    scene.clock.advance(1)
    scene.service.tick()
    firing = [a for a in scene.active("CadAtRisk") if a.state is AlertState.FIRING]
    assert firing == []


def test_stable_position_with_high_risk_but_infinite_time_is_not_paged(scene: Scene) -> None:
    degrading(scene.position("3"), risk=0.9, ttl=INF, loss=0.02)
    assert scene.service.engine.active() == []
    assert scene.rec.delivered == []


def test_hard_cut_pages_on_the_priority_batch_and_names_the_layer(scene: Scene) -> None:
    position = scene.position("12", healthy_first=True)
    position.report(
        judgement(
            position.now_ms,
            layers={layer: "failed" for layer in ("router", "internet", "vpn", "agency", "dns", "cad")},
            verdict=("router", "home router unreachable"),
            risk=1.0,
            ttl=0.0,
            ready=0.0,
        ),
        priority=True,
    )
    # for = 0 s: firing on that very ingest, no tick needed.
    alert = scene.only_page("PositionLayerFailed")
    assert alert.state is AlertState.FIRING
    assert (alert.labels["layer"], alert.severity) == ("router", "critical")
    assert (
        alert.annotations["summary"]
        == "Position 12 (north) lost CAD — home router unreachable; hotspot not ready."
    )
    assert scene.rec.pages("CadAtRisk") == []  # already lost: no "will lose" on top
    scene.clock.advance(1)
    position.healthy()
    assert [g.status for g in scene.rec.pages("PositionLayerFailed")] == ["firing", "resolved"]


def _vpn_down(position: Position) -> None:
    position.vpn_down()


def _on_the_hotspot(position: Position) -> None:
    words = "home internet (ISP) down, router fine — running on the backup path"
    layer_failed(position, "internet", words, on_backup=1.0)


def _on_battery(position: Position) -> None:
    ts = position.now_ms
    position.report(
        [
            *judgement(ts, layers={"power": "degraded"}, verdict=("power", "on battery")),
            Sample("lifeline_battery_ratio", 0.64, ts),
            Sample("lifeline_battery_time_left_seconds", 3120.0, ts),
        ]
    )


def _home_power_out(position: Position) -> None:
    ts = position.now_ms
    home = {"power": "degraded", "router": "failed", "internet": "failed", "vpn": "failed", "cad": "failed"}
    position.report(
        [
            *judgement(
                ts,
                layers=home,
                verdict=("power", "on battery — home power out; home router unreachable"),
                risk=1.0,
                ttl=0.0,
            ),
            Sample("lifeline_battery_ratio", 0.95, ts),
        ]
    )


class LayerPage(NamedTuple):
    """What one report of a position sends: the PositionLayerFailed page and its words."""

    position: str
    site: str
    report: Callable[[Position], None]
    layer: str
    severity: str
    summary: str
    description_says: str = ""


LAYER_PAGES = {
    "vpn down with the hotspot ready": LayerPage(
        "7",
        "south",
        _vpn_down,
        "vpn",
        "critical",
        "Position 7 (south) lost CAD — VPN tunnel down, internet fine; hotspot ready.",
        description_says="switch to the hotspot",
    ),
    "running on the hotspot is a warning, not a lost position": LayerPage(
        "8",
        "north",
        _on_the_hotspot,
        "internet",
        "warning",
        "Position 8 (north) is running on the hotspot — home internet (ISP) down, router fine — running on"
        " the backup path; CAD still up, no second path left.",
    ),
    "home power out is one page that names the power, not the router": LayerPage(
        "9",
        "north",
        _home_power_out,
        "power",
        "critical",
        "Position 9 (north) lost CAD — on battery — home power out; home router unreachable; hotspot ready.",
        description_says="reports the power layer failed",
    ),
    "on battery is a warning with the battery figures": LayerPage(
        "4",
        "north",
        _on_battery,
        "power",
        "warning",
        "Position 4 (north) is on battery — home power out (battery 64 %, 52 min left); CAD still up,"
        " hotspot ready.",
    ),
}


@pytest.mark.parametrize("case", list(LAYER_PAGES.values()), ids=list(LAYER_PAGES))
def test_a_failed_layer_pages_once_in_its_own_words(scene: Scene, case: LayerPage) -> None:
    case.report(scene.position(case.position, case.site))
    alert = scene.only_page("PositionLayerFailed")
    assert (alert.labels["layer"], alert.severity) == (case.layer, case.severity)
    assert alert.annotations["summary"] == case.summary
    assert case.description_says in alert.annotations["description"]


def test_failover_not_ready_waits_for_its_hold(scene: Scene) -> None:
    service, rec, clock = scene.service, scene.rec, scene.clock
    position = scene.position("5")

    def backup_failed() -> None:
        clock.advance(1)
        layer_failed(position, "backup", "backup path (hotspot) not ready — primary fine", ready=0.0)
        service.tick()

    for _ in range(5):
        backup_failed()
    # 4 s held: still pending (default for = 5 s on top of the agent's own fail hold)
    assert states(service) == {("FailoverNotReady", "pos-5"): "pending"}
    assert rec.delivered == []
    backup_failed()
    assert states(service) == {("FailoverNotReady", "pos-5"): "firing"}
    alert = scene.only_page("FailoverNotReady")
    assert alert.labels["urgency"] == "low"
    assert alert.annotations["summary"] == (
        "Position 5 (north) has no working backup — backup path (hotspot) not ready; primary fine, CAD up."
    )
    # The primary failing as well: the backup alert gives way to the lost position.
    clock.advance(1)
    position.vpn_down()
    assert ("FailoverNotReady", "pos-5") not in states(service)
    assert states(service)[("PositionLayerFailed", "pos-5")] == "firing"


def test_latest_verdict_wins_over_older_label_sets(scene: Scene) -> None:
    position = scene.position("6")
    position.vpn_down()
    scene.clock.advance(1)
    position.healthy()  # a new verdict label set; the old one stays in the store, older
    assert scene.service.engine.active() == []
    assert [g.status for g in scene.rec.pages("PositionLayerFailed")] == ["firing", "resolved"]


def test_configured_hold_keeps_an_alert_pending(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock, alerting={"for": {"PositionLayerFailed": "5s"}})
    service, rec = next(gen)
    position = Scene(service, rec, clock).position("9")
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


def test_agency_dns_down_with_cad_up_is_a_warning_not_a_page(scene: Scene) -> None:
    position = scene.position("12", healthy_first=True)
    layer_failed(position, "dns", "agency DNS not answering", priority=True)
    (alert,) = scene.active("PositionLayerFailed")
    assert alert.labels["severity"] == "warning"
    assert alert.labels["layer"] == "dns"
    assert alert.annotations["summary"] == (
        "Position 12 (north): agency DNS not answering — CAD still up; a reconnect would fail until DNS answers."
    )
    scene.clock.advance(1)
    # When CAD goes too, it is a page like any other lost position.
    position.report(
        judgement(
            position.now_ms,
            layers={"dns": "failed", "cad": "failed"},
            verdict=("dns", "agency DNS not answering"),
        ),
        priority=True,
    )
    assert "critical" in {a.labels["severity"] for a in scene.active("PositionLayerFailed")}
