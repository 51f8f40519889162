"""Silence from heartbeats and one incident per outage, on an injected clock.

A position beats every 0.25 s over the tunnel and the hotspot; the tests cut it off, bring it back
with its backlog, fail its layers and CAD targets, and restart the collector, and count pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alerting_kit import Position, Recorder, collector, judgement, make_config, probe_round, states
from collector_kit import serving

from lifeline_collector.alerting.alert import AlertGroup, AlertState
from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire.heartbeat import BeatDigest
from lifeline_wire.tomlcfg import ConfigError

BEAT = 0.25


def said(
    layer: str = "none",
    state: str = "ok",
    risk: float = 0.0,
    time_to_loss: float | None = None,
    backup_ready: bool | None = False,
    on_backup: bool = False,
) -> BeatDigest:
    """What the agent's last beat said (healthy, backup not ready, by default)."""
    return BeatDigest(layer, state, risk, time_to_loss, backup_ready, on_backup)


class Beating(Position):
    """A position whose agent also beats, as the heartbeat receiver records it in the fleet view."""

    def beat(self, paths: tuple[str, ...] = ("tunnel", "backup"), digest: BeatDigest | None = None) -> None:
        view = self.service.fleet.agents[self.id]
        now = self.clock.now()
        before = view.last_beat
        view.last_beat = now
        view.beat = digest or said()
        view.beat_paths = {**view.beat_paths, **dict.fromkeys(paths, now)}
        if before is None or now - before > 1.0:
            self.service.heard(self.id)  # the receiver reports a beat after a gap

    def beat_for(self, seconds: float, **kwargs: object) -> None:
        """Beat every 0.25 s for ``seconds``, the silence check running as in the service."""
        for _ in range(round(seconds / BEAT)):
            self.clock.advance(BEAT)
            self.beat(**kwargs)  # type: ignore[arg-type]
            self.service.check_silence()

    def quiet_for(self, seconds: float, step: float = 0.2) -> None:
        """Nothing heard for ``seconds``; the silence check runs every ``step`` s and the tick each second."""
        ticks = 0.0
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.service.check_silence()
            ticks += step
            if ticks >= 1.0:
                ticks = 0.0
                self.service.tick()


@pytest.fixture
def scene(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Collector, Recorder]]:
    yield from collector(tmp_path, clock, alerting={"cad_failures": 3, "resolve_hold": "10s"})


def pages(rec: Recorder) -> list[AlertGroup]:
    """What people were paged (firing notifications that are not keep-alives or updates)."""
    return [g for g in rec.delivered if g.status == "firing" and g.reason not in ("resend", "update")]


def at_ms(clock: ManualClock, seconds: float) -> int:
    return int((clock.now() + seconds) * 1000)


def test_a_total_cut_pages_within_the_heartbeat_threshold_in_what_is_known(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Beating(service, clock, "pos-12", "north", "12")
    pos.healthy(ready=0.0)
    pos.beat_for(5.0)
    cut = clock.now()
    pos.quiet_for(2.4)
    assert pages(rec) == []  # 2.4 s without a beat: not yet
    pos.quiet_for(0.2)
    (page,) = pages(rec)
    alert = page.alerts[0]
    assert alert.name == "PositionSilent"
    assert alert.starts_at - cut == pytest.approx(2.6)
    assert alert.annotations["summary"] == (
        "Position 12 (north) went dark 3 s ago — nothing over the VPN or the hotspot; last heard: all"
        " layers healthy, backup not ready. Its CAD session is probably lost."
    )


def test_the_sentence_names_only_the_paths_that_were_beating_and_the_last_judgement(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Beating(service, clock, "pos-12", "north", "12")
    pos.healthy()
    pos.beat_for(2.0, paths=("tunnel",), digest=said("internet", "degraded", 0.4, 30.0, True, False))
    pos.quiet_for(3.0)
    (page,) = pages(rec)
    assert page.alerts[0].annotations["summary"] == (
        "Position 12 (north) went dark 3 s ago — nothing over the VPN; last heard: home internet (ISP)"
        " degraded, backup ready. Its CAD session is probably lost."
    )


def test_an_agent_that_never_beat_falls_back_to_batch_silence(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Position(service, clock, "pos-12", "north", "12")
    pos.healthy()
    for _ in range(14):
        clock.advance(1.0)
        service.check_silence()
        service.tick()
    assert pages(rec) == []
    clock.advance(1.0)
    service.check_silence()
    (page,) = pages(rec)
    assert page.alerts[0].annotations["summary"].startswith("Position 12 (north): silent for 15 s")


def test_a_silent_position_heard_again_is_evaluated_at_once(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock, alerting={"resolve_hold": "0s"})
    service, rec = next(gen)
    pos = Beating(service, clock, "pos-12", "north", "12")
    pos.healthy()
    pos.beat_for(1.0)
    pos.quiet_for(3.0)
    assert states(service) == {("PositionSilent", "pos-12"): "firing"}
    clock.advance(0.1)
    pos.beat()  # no tick, no batch: the receiver's call alone
    assert states(service) == {}
    assert [g.status for g in rec.delivered] == ["firing", "resolved"]
    gen.close()


def test_a_restart_pages_nobody_for_the_grace_then_counts_from_the_start(
    tmp_path: Path, clock: ManualClock
) -> None:
    gen = collector(tmp_path, clock)
    service, _rec = next(gen)
    pos = Beating(service, clock, "pos-12", "north", "12")
    pos.healthy()
    pos.beat_for(1.0)
    gen.close()
    clock.advance(120.0)  # the collector was down for two minutes; the agent too, meanwhile
    gen = collector(tmp_path, clock)
    service, rec = next(gen)
    for _ in range(70):
        clock.advance(0.2)
        service.check_silence()
    service.tick()
    assert pages(rec) == []  # no beat since this start: the batch-based 15 s from the start
    for _ in range(10):
        clock.advance(1.0)
        service.check_silence()
        service.tick()
    assert [g.alerts[0].name for g in pages(rec)] == ["PositionSilent"]
    gen.close()


def test_a_restart_keeps_an_acknowledged_silence_open_with_its_start(
    tmp_path: Path, clock: ManualClock
) -> None:
    gen = collector(tmp_path, clock)
    service, rec = next(gen)
    pos = Position(service, clock, "pos-12", "north", "12")  # an agent without heartbeats
    pos.healthy()
    for _ in range(16):
        clock.advance(1.0)
        service.tick()
    (alert,) = service.engine.active()
    assert alert.state is AlertState.FIRING
    service.acknowledge(alert.fingerprint, by="sup-ana")
    gen.close()
    clock.advance(5.0)
    gen = collector(tmp_path, clock)
    service, rec = next(gen)
    for _ in range(40):  # through the restart grace and well past it
        clock.advance(1.0)
        service.check_silence()
        service.tick()
    assert [g.status for g in rec.delivered if not g.resend] == []  # neither resolved nor paged again
    (restored,) = service.engine.active()
    assert restored.fingerprint == alert.fingerprint
    assert restored.starts_at == pytest.approx(alert.starts_at, abs=0.001)  # kept to the millisecond
    ack = service.engine.status(restored).acknowledged
    assert ack is not None
    assert ack.by == "sup-ana"
    gen.close()


def _cut_off(pos: Beating, clock: ManualClock) -> float:
    """Healthy and beating, then cut off (nothing heard) until paged as silent; returns the cut."""
    pos.healthy(ready=0.0)
    pos.beat_for(2.0)
    cut = clock.now()
    pos.quiet_for(3.0)
    return cut


def _backlog(pos: Beating, clock: ManualClock, cut: float) -> None:
    """What the agent spooled during the cut, sent once it is back: internet down, then CAD lost."""
    for offset, layers, verdict in (
        (0.5, {"internet": "failed"}, ("internet", "home internet (ISP) down, router fine")),
        (
            2.5,
            {"internet": "failed", "vpn": "failed", "agency": "failed", "dns": "failed", "cad": "failed"},
            ("internet", "home internet (ISP) down, router fine"),
        ),
    ):
        ms = int((cut + offset) * 1000)
        pos.report(
            judgement(ms, layers=layers, verdict=verdict, risk=1.0, ttl=0.0, ready=0.0)
            + probe_round(ms, "cad-tcp", "cad", ok=False)
            + probe_round(ms, "cad-icmp", "cad", ok=False)
        )


def test_the_backlog_tells_its_story_on_the_open_incident_and_pages_nothing_new(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Beating(service, clock, "pos-12", "north", "12")
    cut = _cut_off(pos, clock)
    pos.quiet_for(55.0)  # a minute without a way out
    clock.advance(0.2)
    pos.beat(digest=said(backup_ready=False))  # back: the first beat, then the spool drains
    _backlog(pos, clock, cut)
    (lead,) = service.engine.active()
    assert lead.name == "PositionSilent"
    story = lead.annotations["story"]
    assert story.startswith("cut off 58 s: home internet (ISP) down from ")
    assert "; CAD lost from " in story
    assert story.endswith("; hotspot not ready (UTC)")
    assert lead.annotations["summary"].startswith("Position 12 (north) is heard again after 58 s cut off")
    clock.advance(1.0)
    pos.report(  # the present: healthy again
        judgement(pos.now_ms, ready=0.0)
        + probe_round(pos.now_ms, "cad-tcp", "cad", ok=True)
        + probe_round(pos.now_ms, "cad-icmp", "cad", ok=True)
    )
    pos.beat_for(15.0)  # the resolve hold passes
    service.tick()
    assert [g.alerts[0].name for g in pages(rec)] == ["PositionSilent"]  # one page for the outage
    resolved = [g for g in rec.delivered if g.status == "resolved"]
    assert [g.alerts[0].name for g in resolved] == ["PositionSilent"]
    assert resolved[0].alerts[0].annotations["story"] == story


def test_several_cad_targets_failing_together_page_once(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Position(service, clock, "pos-12", "north", "12")
    for round_ in range(5):
        clock.advance(1.0)
        ok = round_ == 0
        pos.report(
            probe_round(pos.now_ms, "cad-tcp", "cad", ok=ok)
            + probe_round(pos.now_ms, "cad-icmp", "cad", ok=ok)
        )
    assert len(pages(rec)) == 1
    assert [a.name for a in service.engine.active()] == ["CadTargetUnreachable"]


def test_a_layer_that_moves_as_evidence_comes_in_updates_its_page(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Position(service, clock, "pos-12", "north", "12")
    pos.healthy()
    clock.advance(1.0)
    pos.vpn_down()
    for verdict, layers in (
        (("internet", "home internet (ISP) down, router fine"), {"internet": "failed", "vpn": "failed"}),
        (("cad", "CAD server refusing connections"), {"cad": "failed"}),
    ):
        clock.advance(1.0)
        pos.report(
            judgement(pos.now_ms, layers=layers, verdict=verdict, risk=1.0, ttl=0.0)
            + probe_round(pos.now_ms, "cad-tcp", "cad", ok=False),
            priority=True,
        )
    (page,) = pages(rec)
    assert page.alerts[0].labels["layer"] == "vpn"
    (lead,) = [a for a in service.engine.active() if a.severity == "critical"]
    assert lead.fingerprint == page.alerts[0].fingerprint
    assert lead.annotations["summary"].startswith(
        "Position 12 (north) lost CAD — CAD server refusing connections"
    )
    assert lead.annotations["current_subject"] == "cad"
    # Alertmanager hears the same alert with the new words (an update, not a page).
    updates = [g for g in rec.delivered if g.reason == "update"]
    assert {g.alerts[0].fingerprint for g in updates} == {lead.fingerprint}


def test_at_risk_then_silent_then_flickering_is_one_incident_that_does_not_resolve_while_lost(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Beating(service, clock, "pos-12", "north", "12")
    pos.healthy()
    pos.beat_for(1.0)
    clock.advance(0.25)
    pos.report(
        judgement(
            pos.now_ms, verdict=("none", "home network losing packets"), cause="trend", risk=0.9, ttl=30.0
        )
        + probe_round(pos.now_ms, "vpn.agency.example", "vpn", ok=True, loss=0.3)
    )
    pos.beat_for(1.0)
    (paged,) = [g for g in pages(rec) if g.alerts[0].severity == "critical"]
    assert paged.alerts[0].name == "CadAtRisk"
    for _ in range(3):  # heavy loss: silent, heard for a moment, silent again
        pos.quiet_for(4.0)
        pos.beat_for(0.5)
    pos.quiet_for(20.0)
    critical = [g for g in pages(rec) if g.alerts[0].severity == "critical"]
    assert critical == [paged]  # updated, never paged again
    assert [g.status for g in rec.delivered if g.status == "resolved"] == []  # still lost: still open
    lead = service.engine.states.get(paged.alerts[0].fingerprint)
    assert lead is not None
    assert lead.state is AlertState.FIRING
    assert lead.annotations["summary"].startswith("Position 12 (north) went dark")


def test_a_state_still_failing_after_the_position_is_heard_again_pages_as_usual(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Beating(service, clock, "pos-12", "north", "12")
    _cut_off(pos, clock)
    pos.quiet_for(10.0)
    for _ in range(25):  # the hotspot carries the agent now; the tunnel stays down
        clock.advance(1.0)
        pos.beat(paths=("backup",), digest=said("vpn", "failed", 1.0, 0.0, True, True))
        pos.report(
            judgement(
                pos.now_ms,
                layers={"vpn": "failed", "agency": "failed", "dns": "failed", "cad": "failed"},
                verdict=("vpn", "VPN tunnel down over the hotspot"),
                risk=1.0,
                ttl=0.0,
                on_backup=1.0,
            )
        )
        service.tick()
    assert [g.alerts[0].name for g in pages(rec)] == ["PositionSilent", "PositionLayerFailed"]
    resolved = [g for g in rec.delivered if g.status == "resolved"]
    assert [g.alerts[0].name for g in resolved] == ["PositionSilent"]
    assert resolved[0].alerts[0].annotations["story"].startswith("cut off ")


def test_backlog_arriving_after_the_outage_closed_opens_no_page(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock, alerting={"resolve_hold": "0s"})
    service, rec = next(gen)
    pos = Beating(service, clock, "pos-12", "north", "12")
    cut = _cut_off(pos, clock)
    clock.advance(1.0)
    pos.beat()
    assert [g.status for g in rec.delivered] == ["firing", "resolved"]
    _backlog(pos, clock, cut)  # late: the silence already resolved
    assert [g.status for g in rec.delivered] == ["firing", "resolved"]
    gen.close()


@pytest.mark.anyio
async def test_the_position_detail_shows_the_story(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path, alerting={"resolve_hold": "10s"}, auth={"read_access": "open"})
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    pos = Beating(service, clock, "pos-12", "north", "12")
    cut = _cut_off(pos, clock)
    clock.advance(1.0)
    pos.beat()
    _backlog(pos, clock, cut)
    async with serving(app) as client:
        detail = (await client.get("/positions/pos-12")).json()
    (alert,) = detail["alerts"]
    assert alert["labels"]["alertname"] == "PositionSilent"
    assert alert["annotations"]["story"].startswith("cut off 4 s: home internet (ISP) down from ")


def test_the_heartbeat_threshold_follows_a_shorter_batch_silence_and_never_exceeds_it(tmp_path: Path) -> None:
    assert make_config(tmp_path).alerting.heartbeat_silent_after == 2.5
    assert make_config(tmp_path, alerting={"silent_after": "2s"}).alerting.heartbeat_silent_after == 2.0
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, alerting={"silent_after": "2s", "heartbeat_silent_after": "5s"})
    assert "alerting.heartbeat_silent_after: must not be longer than silent_after (2s)" in str(caught.value)


def test_a_restart_does_not_escalate_a_silence_again(tmp_path: Path, clock: ManualClock) -> None:
    routes = [
        {
            "match": {"site": "north"},
            "notifiers": ["pager"],
            "escalate_after": "10m",
            "escalate_to": ["it-oncall"],
        }
    ]
    notifiers = [
        {"kind": "webhook", "name": "pager", "url": "http://127.0.0.1:9/a"},
        {"kind": "webhook", "name": "it-oncall", "url": "http://127.0.0.1:9/b"},
    ]
    gen = collector(tmp_path, clock, notifiers=notifiers, routes=routes)
    service, rec = next(gen)
    Position(service, clock, "pos-12", "north", "12").healthy()
    for _ in range(16 + 600):
        clock.advance(1.0)
        service.tick()
    assert [(g.reason, g.receivers) for g in rec.delivered if not g.resend] == [
        ("state", ("pager",)),
        ("escalation", ("it-oncall",)),
    ]
    gen.close()
    clock.advance(5.0)
    gen = collector(tmp_path, clock, notifiers=notifiers, routes=routes)
    service, rec = next(gen)
    for _ in range(60):
        clock.advance(1.0)
        service.tick()
    assert [g for g in rec.delivered if not g.resend] == []  # neither paged nor escalated again
    gen.close()


def test_a_position_that_signs_off_is_not_paged_until_it_beats_again(
    scene: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = scene
    pos = Beating(service, clock, "pos-12", "north", "12")
    pos.healthy(ready=0.0)
    pos.beat_for(5.0)
    service.fleet.agents["pos-12"].signed_off = clock.now()  # its last beats said "stopping"
    pos.quiet_for(60.0)  # past the heartbeat threshold and the batch-based one
    assert pages(rec) == []
    service.fleet.agents["pos-12"].signed_off = None  # it started again and beats as usual
    pos.beat_for(2.0)
    pos.quiet_for(2.6)
    (page,) = pages(rec)
    assert page.alerts[0].name == "PositionSilent"
