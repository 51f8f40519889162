"""The evaluation tick skips quiet positions: one whose last evaluation found nothing, holds no
alert and has lost nothing towards a fleet incident finds nothing again until it reports (and the
ingest evaluates it) or falls silent. Skipping must change no alert: the same script of reports
gives the same changes, at the same moments, as a collector that evaluates every position on
every tick — while the tick evaluates only the positions that may have changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from alerting_kit import T0, Position, make_config

from lifeline_collector.alerting import health
from lifeline_collector.alerting.alert import Finding
from lifeline_collector.clock import ManualClock
from lifeline_collector.fleet import AgentView, SeriesState
from lifeline_collector.service import Collector


class Counting:
    """A rule that finds nothing and counts whom it was asked about."""

    name = "Counting"

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        self.asked[agent.id] += 1
        return iter(())


def run(tmp_path: Path, *, skip_quiet: bool) -> tuple[list[tuple[float, str, str, str]], list[Counter[str]]]:
    """A site of five positions for 60 s, ticked every second: what changed, and whom each tick asked."""
    clock = ManualClock(T0)
    service = Collector(
        make_config(
            tmp_path,
            alerting={
                "cad_failures": 3,
                "silent_after": "15s",
                "fleet_min_positions": 2,
                "resolve_hold": "3s",  # resolved by a tick, 3 s after the condition cleared
            },
        ),
        clock=clock,
    )
    if not skip_quiet:
        service.engine.quiet_for = 0.0
    counting = Counting()
    service.engine.rules = (*service.engine.rules, counting)
    changes: list[tuple[float, str, str, str]] = []
    record = service.engine.record

    def recorded(change: object) -> None:
        alert = change.alert  # type: ignore[attr-defined]
        changes.append((clock.now() - T0, alert.name, alert.scope, alert.state.value))
        record(change)  # type: ignore[arg-type]

    service.engine.record = recorded
    steady, tunnel, fading, partner = (
        Position(service, clock, f"pos-{n}", "north", str(n)) for n in range(1, 5)
    )
    Position(service, clock, "pos-5", "north", "5")  # registered, never reports
    service.fleet.sync_agents(service.store.agents())
    per_tick: list[Counter[str]] = []
    for second in range(60):
        clock.advance(1.0)
        if second % 5 == 0:
            steady.healthy()
        if second < 3:
            fading.healthy()  # then falls silent: PositionSilent at 15 s of silence
        if second in (10, 11):
            tunnel.vpn_down()  # two positions lose the VPN concentrator: one fleet incident
            partner.vpn_down()
        elif second % 5 == 0 or second > 30:
            tunnel.healthy()
            partner.healthy()
        before = counting.asked.copy()
        service.tick()
        per_tick.append(counting.asked - before)
    service.store.close()
    return changes, per_tick


def test_skipping_quiet_positions_changes_no_alert_and_asks_fewer(tmp_path: Path) -> None:
    skipped, asked = run(tmp_path / "skip", skip_quiet=True)
    every, asked_all = run(tmp_path / "all", skip_quiet=False)
    assert skipped == every
    names = {name for _, name, _, _ in every}
    assert {"PositionSilent", "FleetIncident"} <= names  # the script exercised silence and incidents
    assert all(sorted(tick) == [f"pos-{n}" for n in range(1, 6)] for tick in asked_all)
    # While it is healthy and reporting, the steady position is evaluated by its ingest, not by ticks.
    assert sum(tick["pos-1"] for tick in asked) == 0
    # Never reported: asked by the first tick, then nothing can change by itself.
    assert [second for second, tick in enumerate(asked) if tick["pos-5"]] == [0]
    # The fading position is asked on every tick once its silence is due, and is then silent.
    fading = [second for second, tick in enumerate(asked) if tick["pos-3"]]
    assert fading == list(range(fading[0], 60))
    assert ("PositionSilent", "pos-3", "firing") in {(n, scope, s) for _, n, scope, s in skipped}
    assert sum(map(len, asked)) < sum(map(len, asked_all)) / 2


def test_health_is_read_once_per_block_and_afresh_after_it() -> None:
    view = AgentView("pos-1")
    layer = {"layer": "vpn"}
    view.series["lifeline_layer_state"] = {'{"layer":"vpn"}': SeriesState(layer, 0.0, 1, 0)}
    with health.remembered():
        first = health.read_health(view)
        view.series["lifeline_layer_state"]['{"layer":"vpn"}'] = SeriesState(layer, 2.0, 2, 0)
        assert health.read_health(view) is first  # one reading per block: the rules share it
        assert first.state("vpn") == "ok"
    assert health.read_health(view).state("vpn") == "failed"  # outside the block: read afresh
