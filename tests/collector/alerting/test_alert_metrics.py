"""The alerting series on /metrics: active alerts by site, time to acknowledge, silences in force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alerting_kit import MS, Position, Recorder, collector, judgement
from prometheus_client.parser import text_string_to_metric_families

from lifeline_collector.alerting import actions
from lifeline_collector.alerting.silences import parse_matcher
from lifeline_collector.alerting.store import AlertStore
from lifeline_collector.clock import ManualClock
from lifeline_collector.exposition import make_registry, render
from lifeline_collector.service import Collector
from lifeline_collector.store import Store
from lifeline_wire import Sample

RULES = {
    "CadAtRisk",
    "CadTargetUnreachable",
    "FailoverNotReady",
    "FleetIncident",
    "PositionLayerFailed",
    "PositionSilent",
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def setup(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Collector, Recorder]]:
    yield from collector(tmp_path, clock)


def scrape(service: Collector) -> Samples:
    text = render(make_registry(service)).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def acks(values: Samples, alertname: str, site: str) -> tuple[float, float]:
    """(acknowledgements, summed seconds to acknowledge) of one alert name and site."""
    labels = frozenset({"alertname": alertname, "site": site}.items())
    return (
        values[("lifeline_alert_acknowledgements_total", labels)],
        values[("lifeline_alert_acknowledge_seconds_total", labels)],
    )


def active(values: Samples, alertname: str, site: str, state: str) -> float:
    return values[
        ("lifeline_alerts_active", frozenset({"alertname": alertname, "site": site, "state": state}.items()))
    ]


def test_alerts_active_by_site_from_zero_for_every_rule_and_site(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    Position(service, clock, "pos-12", "north", "12").vpn_down()
    Position(service, clock, "pos-40", "south", "40").healthy()
    values = scrape(service)
    grid = {
        (dict(labels)["alertname"], dict(labels)["site"], dict(labels)["state"])
        for name, labels in values
        if name == "lifeline_alerts_active"
    }
    assert grid == {(n, s, st) for n in RULES for s in ("north", "south") for st in ("pending", "firing")}
    assert active(values, "PositionLayerFailed", "north", "firing") == 1
    assert active(values, "PositionLayerFailed", "south", "firing") == 0
    # The acknowledgement counters start at zero on the same grid, so the first one is an increase.
    assert acks(values, "PositionLayerFailed", "north") == (0, 0)
    assert acks(values, "FleetIncident", "south") == (0, 0)


def test_time_to_acknowledge_is_counted_once_per_alert_instance(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    position.vpn_down()  # fires at once (hold 0)
    (alert,) = service.engine.active()
    clock.advance(42)
    service.acknowledge(alert.fingerprint, by="sup-ana")
    assert acks(scrape(service), "PositionLayerFailed", "north") == (1, 42)
    clock.advance(10)
    service.acknowledge(alert.fingerprint, by="sup-ben", comment="taking over")  # same instance
    service.tick()
    assert acks(scrape(service), "PositionLayerFailed", "north") == (1, 42)
    # Resolved, then the same condition again: a new instance, acknowledged 5 s after firing.
    clock.advance(1)
    position.healthy()
    clock.advance(1)
    position.vpn_down()
    clock.advance(5)
    service.acknowledge(alert.fingerprint, by="sup-ana")
    assert acks(scrape(service), "PositionLayerFailed", "north") == (2, 47)


def test_an_acknowledgement_written_by_the_cli_counts_at_the_next_tick(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    Position(service, clock, "pos-40", "south", "40").vpn_down()
    (alert,) = service.engine.active()
    clock.advance(30)
    other = Store(service.store.path)  # what `lifeline-collector alerts ack` does
    actions.acknowledge(AlertStore(other), alert.fingerprint, by="sup-cli", now=clock.now())
    other.close()
    assert acks(scrape(service), "PositionLayerFailed", "south") == (0, 0)
    clock.advance(1)
    service.tick()
    assert acks(scrape(service), "PositionLayerFailed", "south") == (1, 30)


def test_an_alert_acknowledged_while_pending_took_no_time(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock)
    service, _rec = next(gen)
    position = Position(service, clock, "pos-5", "north", "5")
    position.report(judgement(position.now_ms, layers={"backup": "failed"}, ready=0.0))
    (alert,) = service.engine.active()
    assert (alert.name, alert.state.value) == ("FailoverNotReady", "pending")  # hold 5 s
    clock.advance(2)
    service.acknowledge(alert.fingerprint, by="sup-ana")
    clock.advance(60)
    position.report(judgement(position.now_ms, layers={"backup": "failed"}, ready=0.0))
    assert [a.state.value for a in service.engine.active()] == ["firing"]
    assert acks(scrape(service), "FailoverNotReady", "north") == (1, 0)
    gen.close()


def test_a_restart_does_not_count_restored_acknowledgements_again(tmp_path: Path, clock: ManualClock) -> None:
    gen = collector(tmp_path, clock)
    service, _rec = next(gen)
    Position(service, clock, "pos-12", "north", "12").vpn_down()
    (alert,) = service.engine.active()
    clock.advance(8)
    service.acknowledge(alert.fingerprint, by="sup-ana")
    assert acks(scrape(service), "PositionLayerFailed", "north") == (1, 8)
    gen.close()

    clock.advance(3)
    gen = collector(tmp_path, clock)
    service, _rec = next(gen)
    service.tick()
    (restored,) = service.engine.active()
    assert service.engine.status(restored).acknowledged is not None
    assert acks(scrape(service), "PositionLayerFailed", "north") == (0, 0)
    gen.close()


def test_silences_in_force(setup: tuple[Collector, Recorder], clock: ManualClock) -> None:
    service, _rec = setup

    def in_force() -> float:
        return scrape(service)[("lifeline_silences_active", frozenset())]

    assert in_force() == 0
    north = service.add_silence([parse_matcher("site=north")], created_by="sup", duration=600)
    service.add_silence(
        [parse_matcher("site=south")], created_by="sup", starts_at=clock.now() + 60, duration=600
    )  # pending: not in force yet
    assert in_force() == 1
    clock.advance(60)
    assert in_force() == 2
    service.expire_silence(north.id)
    assert in_force() == 1
    clock.advance(600)  # the other one ends on its own
    assert in_force() == 0


def test_an_info_metric_shows_only_its_latest_label_sets(
    setup: tuple[Collector, Recorder], clock: ManualClock
) -> None:
    service, _rec = setup
    position = Position(service, clock, "pos-12", "north", "12")
    paths = [
        Sample("lifeline_agent_delivery_path_info", value, MS, {"endpoint": url, "path": via})
        for url, via, value in (("https://c1", "default", 1.0), ("https://c1", "backup", 0.0))
    ]
    position.report(judgement(MS, verdict=("vpn", "VPN tunnel losing packets")) + paths)
    clock.advance(1)
    position.report(judgement(position.now_ms))  # the verdict changed; no new delivery paths
    values = scrape(service)
    verdicts = {
        dict(labels)["verdict"]: value
        for name, labels in values
        if name == "lifeline_verdict_info"
        for value in [values[(name, labels)]]
    }
    assert verdicts == {"healthy": 1.0}
    delivery = {
        dict(labels)["path"]: values[(name, labels)]
        for name, labels in values
        if name == "lifeline_agent_delivery_path_info"
    }
    assert delivery == {"default": 1.0, "backup": 0.0}  # one report holds every current path
