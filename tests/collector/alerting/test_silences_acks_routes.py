"""Silences (matching, expiry), acknowledgements, routing by site, repeat and escalation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerting_kit import Position, Recorder, collector, make_config, states

from lifeline_collector.alerting.errors import MatcherError, SilenceError, UnknownAlertError
from lifeline_collector.alerting.routing import Route, Router, union
from lifeline_collector.alerting.silences import Matcher, new_silence, parse_matcher
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_wire.tomlcfg import ConfigError

NOTIFIERS = [
    {"kind": "webhook", "name": "north-pager", "url": "http://127.0.0.1:9/a"},
    {"kind": "webhook", "name": "south-pager", "url": "http://127.0.0.1:9/b"},
    {"kind": "webhook", "name": "it-oncall", "url": "http://127.0.0.1:9/c"},
    {"kind": "alertmanager", "name": "am", "url": "http://127.0.0.1:9"},
]
ROUTES: list[dict[str, Any]] = [
    {
        "match": {"site": "north"},
        "notifiers": ["north-pager", "am"],
        "repeat_interval": "5m",
        "escalate_after": "10m",
        "escalate_to": ["it-oncall"],
        "continue": True,
    },
    {"match_re": {"alertname": "Fleet.*|PositionLayerFailed"}, "notifiers": ["it-oncall"]},
    {"match": {"site": "south"}, "notifiers": ["south-pager"]},
]


@pytest.fixture
def setup(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Collector, Recorder]]:
    yield from collector(tmp_path, clock, notifiers=NOTIFIERS, routes=ROUTES)


# --- matchers and silences -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("site=north", {"site": "north"}, True),
        ("site=north", {"site": "northeast"}, False),
        ("site!=north", {"site": "south"}, True),
        ("site!=north", {}, True),
        ("alertname=~Cad.*", {"alertname": "CadAtRisk"}, True),
        ("alertname=~Cad", {"alertname": "CadAtRisk"}, False),  # anchored, like Alertmanager
        ("alertname!~Cad.*", {"alertname": "PositionSilent"}, True),
        ('position="12"', {"position": "12"}, True),
        ("layer=", {}, True),  # a missing label is the empty string
    ],
)
def test_matchers(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site", "must look like name=value"),
        ("9site=x", "must look like name=value"),
        ("alertname=~(", "bad regex"),
    ],
)
def test_bad_matchers_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(MatcherError, match=message) as caught:
        parse_matcher(text)
    assert caught.value.matcher == text


def test_silence_validation() -> None:
    north = [Matcher.make("site", "=", "north")]
    with pytest.raises(SilenceError, match="at least one matcher"):
        new_silence([], starts_at=0, ends_at=10, created_by="a", comment="", now=0)
    with pytest.raises(SilenceError, match="every alert"):
        new_silence([parse_matcher("site=~.*")], starts_at=0, ends_at=10, created_by="a", comment="", now=0)
    with pytest.raises(SilenceError, match="who creates") as caught:
        new_silence(north, starts_at=0, ends_at=10, created_by=" ", comment="", now=0)
    assert caught.value.field == "createdBy"
    with pytest.raises(SilenceError, match="after startsAt"):
        new_silence(north, starts_at=10, ends_at=10, created_by="a", comment="", now=0)
    silence = new_silence(north, starts_at=5, ends_at=10, created_by="a", comment="", now=0)
    assert [silence.state(t) for t in (4, 5, 9.9, 10)] == ["pending", "active", "active", "expired"]


def test_silence_mutes_until_it_expires_then_the_alert_is_paged(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    silence = service.add_silence(
        [parse_matcher("site=north")], created_by="sup-ana", comment="planned VPN work", duration=600
    )
    position = Position(service, clock, "pos-12", "north", "12")
    position.vpn_down()
    (alert,) = service.engine.active()
    assert service.engine.status(alert).silenced_by == (silence.id,)
    assert rec.delivered == []
    clock.advance(599)
    position.vpn_down()
    service.tick()
    assert rec.delivered == []
    clock.advance(1)  # the silence ends; still firing → paged now
    position.vpn_down()
    service.tick()
    (page,) = rec.pages("PositionLayerFailed")
    assert page.status == "firing"
    # Stored with who, why and when, and listed as expired afterwards.
    (stored,) = service.silences(include_expired=True)
    assert (stored.created_by, stored.comment, stored.state(clock.now())) == (
        "sup-ana",
        "planned VPN work",
        "expired",
    )


def test_expiring_a_silence_early_releases_what_it_held(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    silence = service.add_silence([parse_matcher("agent=pos-2")], created_by="sup", duration=3600)
    Position(service, clock, "pos-2", "south", "2").vpn_down()
    assert rec.delivered == []
    clock.advance(5)
    service.expire_silence(silence.id)
    assert [g.status for g in rec.pages("PositionLayerFailed")] == ["firing"]
    assert service.silences() == []


def test_a_silence_added_by_another_process_applies_at_the_next_tick(
    setup: tuple[Collector, Recorder], clock: ManualClock, tmp_path: Path
) -> None:
    from lifeline_collector.alerting import actions
    from lifeline_collector.alerting.store import AlertStore
    from lifeline_collector.store import Store

    service, rec = setup
    other = Store(service.store.path)
    actions.create_silence(AlertStore(other), ["site=south"], now=clock.now(), duration=60, created_by="cli")
    other.close()
    service.tick()
    Position(service, clock, "pos-2", "south", "2").vpn_down()
    assert rec.delivered == []


# --- routing, repeat, escalation, acknowledgement --------------------------------------------------


def test_router_semantics() -> None:
    north = Route(matchers=(parse_matcher("site=north"),), notifiers=("a",), continue_=True)
    crit = Route(matchers=(parse_matcher("severity=critical"),), notifiers=("b",))
    last = Route(matchers=(), notifiers=("c",))
    router = Router([north, crit, last])
    assert [i for i, _ in router.match({"site": "north", "severity": "critical"})] == [0, 1]
    assert [i for i, _ in router.match({"site": "south", "severity": "critical"})] == [1]
    assert [i for i, _ in router.match({"site": "south"})] == [2]
    assert Router([north]).match({"site": "south"})[0][1].notifiers is None  # default: everyone
    assert union(("a", "b"), ("b", "c")) == ("a", "b", "c")
    assert union(("a",), None) is None


def test_routed_by_site_with_continue(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, rec = setup
    Position(service, clock, "pos-12", "north", "12").vpn_down()
    Position(service, clock, "pos-2", "south", "2").vpn_down()
    by_agent = {g.alerts[0].labels["agent"]: g.receivers for g in rec.delivered}
    assert by_agent == {"pos-12": ("north-pager", "am", "it-oncall"), "pos-2": ("it-oncall",)}


def test_unrouted_alerts_go_to_every_notifier(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-7", "west", "7")
    position.healthy()
    clock.advance(16)
    service.tick()  # PositionSilent at site west: no route takes it
    (page,) = rec.pages("PositionSilent")
    assert page.receivers is None


def test_repeat_then_escalation_then_ack_stops_both(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, rec = setup
    position = Position(service, clock, "pos-12", "north", "12")

    def minute() -> None:
        clock.advance(60)
        position.vpn_down()
        service.tick()

    position.vpn_down()
    for _ in range(5):
        minute()
    repeats = rec.pages(reason="repeat")
    assert [g.receivers for g in repeats] == [("north-pager", "am")]  # 5 min: the north route repeats
    assert rec.pages(reason="escalation") == []
    for _ in range(5):
        minute()
    (escalation,) = rec.pages(reason="escalation")  # 10 min unacknowledged
    assert escalation.receivers == ("it-oncall",)
    assert escalation.alerts[0].annotations["summary"].startswith("Position 12 (north) lost CAD")
    for _ in range(5):
        minute()
    assert [g.receivers for g in rec.pages(reason="repeat")][-1] == ("north-pager", "am", "it-oncall")
    count = len(rec.pages(reason="repeat"))
    (alert,) = service.engine.active()
    service.acknowledge(alert.fingerprint, by="sup-ana", comment="calling the position")
    assert service.engine.status(alert).acknowledged is not None
    for _ in range(15):
        minute()
    assert len(rec.pages(reason="repeat")) == count  # no more repeats once acknowledged
    assert len(rec.pages(reason="escalation")) == 1
    # Alertmanager still gets its keep-alive (only notifiers that want resends take those).
    assert rec.pages(reason="resend")
    history = service.alert_store.alert_history("pos-12")
    ack = next(h for h in history if h["state"] == "acknowledged")
    assert ack["annotations"]["acknowledged_by"] == "sup-ana"  # type: ignore[index]
    # Resolution goes to everyone who was paged, escalation receivers included.
    clock.advance(1)
    position.healthy()
    (resolved,) = [g for g in rec.delivered if g.status == "resolved"]
    assert resolved.receivers == ("north-pager", "am", "it-oncall")


def test_ack_of_unknown_alert_and_ack_does_not_carry_over(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    with pytest.raises(UnknownAlertError):
        service.acknowledge("0123456789abcdef", by="sup")
    position = Position(service, clock, "pos-12", "north", "12")
    position.vpn_down()
    (alert,) = service.engine.active()
    service.acknowledge(alert.fingerprint, by="sup")
    clock.advance(1)
    position.healthy()
    clock.advance(1)
    position.vpn_down()  # the same condition again: a new instance, not acknowledged
    (again,) = service.engine.active()
    assert again.fingerprint == alert.fingerprint
    assert service.engine.status(again).acknowledged is None


def test_restart_restores_alerts_without_paging_again(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock, notifiers=NOTIFIERS, routes=ROUTES)
    service, rec = next(gen)
    position = Position(service, clock, "pos-12", "north", "12")
    position.vpn_down()
    (alert,) = service.engine.active()
    service.acknowledge(alert.fingerprint, by="sup")
    assert len(rec.delivered) == 1
    gen.close()  # the collector stops

    gen = collector(tmp_path, clock, notifiers=NOTIFIERS, routes=ROUTES)
    service, rec = next(gen)
    assert states(service) == {("PositionLayerFailed", "pos-12"): "firing"}
    (restored,) = service.engine.active()
    assert service.engine.status(restored).acknowledged is not None
    clock.advance(1)
    service.ingest(service.store.agent("pos-12"), _vpn_down_envelope(clock))  # type: ignore[arg-type]
    assert [g.reason for g in rec.delivered] == []  # not paged twice
    clock.advance(1)
    service.ingest(service.store.agent("pos-12"), _healthy_envelope(clock))  # type: ignore[arg-type]
    assert [(g.status, g.receivers) for g in rec.delivered] == [
        ("resolved", ("north-pager", "am", "it-oncall"))
    ]
    gen.close()


def _envelope(clock: ManualClock, seq: int, samples: list[Any]) -> Any:
    from lifeline_wire import Batch, Envelope

    ms = int(clock.now() * 1000)
    return Envelope(version=1, batches=[Batch("pos-12", "b2", seq, ms, samples)], sent_ms=ms)


def _vpn_down_envelope(clock: ManualClock) -> Any:
    from alerting_kit import judgement, probe_round

    ms = int(clock.now() * 1000)
    failed = {"vpn": "failed", "agency": "failed", "dns": "failed", "cad": "failed"}
    samples = judgement(ms, layers=failed, verdict=("vpn", "VPN tunnel down, internet fine"))
    return _envelope(clock, 1, samples + probe_round(ms, "vpn.agency.example", "vpn", ok=False))


def _healthy_envelope(clock: ManualClock) -> Any:
    from alerting_kit import judgement

    return _envelope(clock, 2, judgement(int(clock.now() * 1000)))


# --- config ------------------------------------------------------------------------------------------


def test_route_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(
            tmp_path,
            notifiers=NOTIFIERS,
            routes=[
                {"match": {"site": "north"}, "notifiers": ["nobody"], "repeat_interval": "2s"},
                {
                    "match_re": {"site": "("},
                    "notifiers": ["am"],
                    "escalate_to": ["it-oncall"],
                    "colour": "red",
                },
                {"match": {"site": "x"}},
            ],
        )
    problems = dict(caught.value.problems)
    assert problems["routes[0].notifiers"].startswith("no notifier named 'nobody'")
    assert problems["routes[0].repeat_interval"].startswith("must be 0 (never) or ≥ 10s")
    assert problems["routes[1].match_re.site"].startswith("bad regex")
    assert problems["routes[1].escalate_after"] == "is required with escalate_to"
    assert problems["routes[1].colour"] == "unknown key"
    assert problems["routes[2].notifiers"].startswith("is required")
    assert len(caught.value.problems) == 6


def test_alerting_bands_and_holds_config(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        alerting={
            "risk_warn": 0.4,
            "risk_page": 0.9,
            "page_time_to_loss": "90s",
            "fleet_min_positions": 5,
            "fleet_window": "2m",
            "for": {"FailoverNotReady": "5m"},
        },
    )
    a = config.alerting
    assert (a.risk_warn, a.risk_page, a.page_time_to_loss, a.fleet_min_positions, a.fleet_window) == (
        0.4,
        0.9,
        90.0,
        5,
        120.0,
    )
    assert a.holds == {
        "CadAtRisk": 0.0,
        "PositionLayerFailed": 0.0,
        "FailoverNotReady": 300.0,
        "FleetIncident": 0.0,
    }
    with pytest.raises(ConfigError) as caught:
        make_config(
            tmp_path,
            alerting={
                "risk_warn": 0.9,
                "risk_page": 0.5,
                "fleet_min_positions": 1,
                "for": {"CadAtRsk": "1s"},
            },
        )
    assert dict(caught.value.problems) == {
        "alerting.risk_page": "must not be below risk_warn (0.9)",
        "alerting.fleet_min_positions": "must be ≥ 2 (got 1)",
        "alerting.for.CadAtRsk": "unknown rule (one of CadAtRisk, PositionLayerFailed, FailoverNotReady, FleetIncident)",
    }
