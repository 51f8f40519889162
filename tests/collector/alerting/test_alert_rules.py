"""Alert rules and lifecycle on an injected clock: CAD unreachable after N rounds, position silent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_kit import T0, cad_round, make_config

from lifeline_collector.alerting.alert import AlertGroup, AlertState, fingerprint
from lifeline_collector.alerting.state import Change
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow
from lifeline_wire import Batch, Envelope, Sample

MS = int(T0 * 1000)


class Position:
    """One agent reporting probe rounds of its CAD target, one batch per round, one second apart."""

    def __init__(self, service: Collector, clock: ManualClock, agent_id: str = "pos-12") -> None:
        self.service = service
        self.clock = clock
        self.id = agent_id
        service.store.add_agent(agent_id, site="north", position="12", now_ms=MS)
        row = service.store.agent(agent_id)
        assert row is not None
        self.row: AgentRow = row
        self.seq = 0
        self.failures = 0

    def report(self, samples: list[Sample]) -> None:
        batch = Batch(agent_id=self.id, boot_id="b1", seq=self.seq, created_ms=self.now_ms, samples=samples)
        self.service.ingest(self.row, Envelope(version=1, batches=[batch], sent_ms=self.now_ms))
        self.seq += 1

    def round(self, ok: bool, target: str = "cad-primary") -> None:
        self.clock.advance(1.0)
        self.failures = 0 if ok else self.failures + 1
        self.report(cad_round(self.now_ms, ok, self.failures, target))

    @property
    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)


@pytest.fixture
def setup(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Collector, list[Change], list[AlertGroup]]]:
    service = Collector(
        make_config(tmp_path, alerting={"cad_failures": 3, "silent_after": "15s"}), clock=clock
    )
    changes: list[Change] = []
    delivered: list[AlertGroup] = []
    record, deliver = service.engine.record, service.engine.deliver
    service.engine.record = lambda change: (changes.append(change), record(change))[-1]
    service.engine.deliver = lambda group: (delivered.append(group), deliver(group))[-1]
    yield service, changes, delivered
    service.store.close()


def states(service: Collector) -> dict[str, str]:
    return {alert.name: alert.state.value for alert in service.engine.active()}


def test_cad_alert_pending_then_firing_after_n_rounds_then_resolved(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    service, changes, delivered = setup
    position = Position(service, clock)
    position.round(ok=True)
    assert service.engine.active() == []
    position.round(ok=False)
    assert states(service) == {"CadTargetUnreachable": "pending"}
    position.round(ok=False)
    assert states(service) == {"CadTargetUnreachable": "pending"}
    assert delivered == []  # pending is not paged
    position.round(ok=False)  # third failed round: fires at once, on the ingest itself
    assert states(service) == {"CadTargetUnreachable": "firing"}
    assert len(delivered) == 1
    alert = delivered[0].alerts[0]
    assert alert.state is AlertState.FIRING
    assert alert.labels == {
        "alertname": "CadTargetUnreachable",
        "agent": "pos-12",
        "site": "north",
        "position": "12",
        "severity": "critical",
        "target": "cad-primary",
        "role": "cad",
    }
    assert alert.fingerprint == fingerprint(alert.labels)
    assert (
        alert.annotations["summary"] == "Position 12 (north): CAD server cad-primary unreachable for 3 rounds"
    )
    assert alert.annotations["link"] == "http://127.0.0.1:8480/positions/pos-12"
    assert alert.starts_at == T0 + 2  # when the first failed round arrived
    position.round(ok=False)  # still failing: no second page, the wording follows
    assert len(delivered) == 1
    assert service.engine.active()[0].annotations["summary"].endswith("for 4 rounds")
    position.round(ok=True)
    assert service.engine.active() == []
    assert len(delivered) == 2
    resolved = delivered[1].alerts[0]
    assert (resolved.state, resolved.ends_at, resolved.fingerprint) == (
        AlertState.RESOLVED,
        T0 + 6,
        alert.fingerprint,
    )
    assert [(c.previous, c.alert.state) for c in changes] == [
        (None, AlertState.PENDING),
        (AlertState.PENDING, AlertState.FIRING),
        (AlertState.FIRING, AlertState.RESOLVED),
    ]
    assert service.store.count("alert_history", "pos-12") == 3


def test_pending_that_clears_is_never_paged(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    service, changes, delivered = setup
    position = Position(service, clock)
    position.round(ok=False)
    position.round(ok=False)
    position.round(ok=True)
    assert service.engine.active() == []
    assert delivered == []
    assert [c.alert.state for c in changes] == [AlertState.PENDING, AlertState.RESOLVED]


def test_success_zero_streak_alone_fires(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    """An agent that sends only lifeline_probe_success still pages after N zero rounds."""
    service, _changes, delivered = setup
    position = Position(service, clock)
    for _ in range(3):
        clock.advance(1.0)
        position.report(
            [Sample("lifeline_probe_success", 0.0, position.now_ms, {"target": "cad", "role": "cad"})]
        )
    assert states(service) == {"CadTargetUnreachable": "firing"}
    assert len(delivered) == 1


def test_non_cad_targets_and_other_paths(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    service, _changes, delivered = setup
    position = Position(service, clock)
    for failures in (1, 2, 3, 4):
        clock.advance(1.0)
        ts = position.now_ms
        position.report(
            [
                # the home router failing is not a CAD alert
                Sample(
                    "lifeline_probe_consecutive_failures", failures, ts, {"target": "gw", "role": "router"}
                ),
                # CAD failing over the primary but reachable over the backup path: not unreachable
                Sample(
                    "lifeline_probe_consecutive_failures",
                    failures,
                    ts,
                    {"target": "cad", "role": "cad", "path": "primary"},
                ),
                Sample(
                    "lifeline_probe_consecutive_failures",
                    0,
                    ts,
                    {"target": "cad", "role": "cad", "path": "backup"},
                ),
            ]
        )
    assert service.engine.active() == []
    assert delivered == []


def test_position_silent_fires_with_last_known_state_and_resolves(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    service, _changes, delivered = setup
    position = Position(service, clock)
    clock.advance(1.0)
    position.report(
        [
            *cad_round(position.now_ms, True, 0),
            Sample("lifeline_failover_ready", 0.0, position.now_ms),
        ]
    )
    last_report = clock.now()
    clock.advance(14.0)
    service.tick()
    assert service.engine.active() == []
    clock.advance(1.0)
    service.tick()  # 15 s of silence
    assert states(service) == {"PositionSilent": "firing"}
    alert = delivered[-1].alerts[0]
    assert alert.annotations["summary"] == (
        "Position 12 (north): silent for 15 s; last report: CAD server cad-primary reachable; backup path not ready"
    )
    assert alert.starts_at == last_report + 15
    clock.advance(1.0)
    position.round(ok=True)  # the agent is back: resolved on that very request
    assert service.engine.active() == []
    assert delivered[-1].alerts[0].state is AlertState.RESOLVED
    assert delivered[-1].alerts[0].labels["alertname"] == "PositionSilent"


def test_never_seen_agent_is_not_silent_and_revoked_agent_resolves(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    service, _changes, delivered = setup
    service.store.add_agent("pos-99", now_ms=MS)  # registered, never reported
    position = Position(service, clock)
    position.round(ok=True)
    clock.advance(60.0)
    service.tick()
    assert [(a.name, a.labels["agent"]) for a in service.engine.active()] == [("PositionSilent", "pos-12")]
    # Revoked by another process (the CLI): the next tick notices through the store and resolves.
    other = type(service.store)(service.store.path)
    other.revoke_agent("pos-12", now_ms=MS)
    other.close()
    service.tick()
    assert service.engine.active() == []
    assert delivered[-1].alerts[0].state is AlertState.RESOLVED


def test_firing_alerts_are_offered_for_resend_every_interval(
    setup: tuple[Collector, list[Change], list[AlertGroup]], clock: ManualClock
) -> None:
    service, _changes, delivered = setup
    position = Position(service, clock)
    for _ in range(3):
        position.round(ok=False)

    def cad() -> list[AlertGroup]:
        return [g for g in delivered if g.alerts[0].name == "CadTargetUnreachable"]

    assert len(cad()) == 1
    for _ in range(59):  # still failing, still reporting (a silence would update the same incident)
        position.round(ok=False)
    service.tick()
    assert len(cad()) == 1
    position.round(ok=False)
    service.tick()
    assert len(cad()) == 2
    assert cad()[1].resend
    assert not cad()[0].resend
    assert cad()[1].alerts[0].fingerprint == cad()[0].alerts[0].fingerprint


def test_fingerprint_is_stable_and_order_free() -> None:
    a = fingerprint({"alertname": "X", "agent": "pos-1"})
    assert a == fingerprint({"agent": "pos-1", "alertname": "X"})
    assert a != fingerprint({"agent": "pos-2", "alertname": "X"})
    assert len(a) == 16


def test_a_flickering_cad_target_pages_once_and_resolves_after_the_hold(
    tmp_path: Path, clock: ManualClock
) -> None:
    service = Collector(
        make_config(tmp_path, alerting={"cad_failures": 3, "silent_after": "15s", "resolve_hold": "10s"}),
        clock=clock,
    )
    delivered: list[AlertGroup] = []
    deliver = service.engine.deliver
    service.engine.deliver = lambda group: (delivered.append(group), deliver(group))[-1]
    try:
        position = Position(service, clock)
        # A target at high loss: three failures, then an answer now and then.
        for ok in (False, False, False, True, False, False, False, True, True, False, False, False):
            position.round(ok=ok)
        assert [(g.status, g.alerts[0].name) for g in delivered] == [("firing", "CadTargetUnreachable")]
        # Healthy again: still firing for the hold (9 s clear), resolved on the round that ends it.
        clear_rounds = 0
        for _ in range(15):
            position.round(ok=True)
            clear_rounds += 1
            if len(delivered) > 1:
                break
        assert clear_rounds == 11  # clear since the first good round, for the 10 s hold
        assert [(g.status, g.alerts[0].name) for g in delivered] == [
            ("firing", "CadTargetUnreachable"),
            ("resolved", "CadTargetUnreachable"),
        ]
        assert delivered[1].alerts[0].ends_at - delivered[0].alerts[0].fired_at >= 10.0
        assert service.engine.active() == []
    finally:
        service.store.close()
