"""A steady batch (one batch in the series form) is planned by its shape, all series at once
(``prepare_fast`` → ``Columns`` → ``plan_columns`` on the agent's ``Slots``). Whatever the agent
sends — streaks of zeros, backfill, NaN and infinities, unordered and equal point times, series that
come and go, a series listed twice, the same agent twice in one commit, a resent batch — the
collector must end with exactly the latest values and zero streaks that the strict decoder and the
per-series ``plan`` give, in its live view, in its ``agent_latest`` row and after a restart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from collector_kit import T0, make_config

from lifeline_collector.fleet import Fleet
from lifeline_collector.ingest.fast import prepare_fast
from lifeline_collector.ingest.pending import Pending
from lifeline_collector.ingest.strict import prepare
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow, Store
from lifeline_wire import Batch, Envelope, SeriesPoints, decode_envelope, encode

MS = int(T0 * 1000)
TARGETS = ("cad", "router", "isp")
POOL: list[tuple[str, dict[str, str]]] = [
    *(("lifeline_probe_success", {"target": t, "role": t, "kind": "icmp"}) for t in TARGETS),
    *(("lifeline_probe_rtt_seconds", {"target": t, "role": t, "kind": "icmp"}) for t in TARGETS),
    ("lifeline_probe_loss_ratio", {"target": "isp", "role": "isp", "kind": "icmp"}),
    ("lifeline_agent_spool_batches", {}),
    ("lifeline_cad_risk_ratio", {}),
]
Snapshot = dict[tuple[str, str], tuple[dict[str, str], str, int, int]]


def value(rng: random.Random, name: str) -> float | str:
    if name == "lifeline_probe_success":
        return 0.0 if rng.random() < 0.45 else 1.0
    if name == "lifeline_probe_rtt_seconds":
        return rng.choice((0.0, rng.uniform(0.001, 0.3)))
    if name == "lifeline_cad_risk_ratio":  # one of the metrics that may be NaN or ±Inf
        return rng.choice((0.0, rng.uniform(0.0, 1.0), "+Inf", "NaN", "-Inf"))
    return rng.choice((0.0, 0.0, 1.0, 3.0))


def points(rng: random.Random, base: int, name: str) -> list[tuple[int, float | str]]:
    times = [base + 1000 * i for i in range(rng.randint(1, 5))]
    if rng.random() < 0.15:  # two points at one time: the first sent is the newest
        times.append(rng.choice(times))
    if rng.random() < 0.3:
        rng.shuffle(times)
    return [(ts, value(rng, name)) for ts in times]


def random_batch(rng: random.Random, seq: int, base: int, shape: list[int]) -> Batch:
    chosen = list(shape)
    if rng.random() < 0.05:  # a series listed twice (the general path takes it)
        chosen.append(chosen[0])
    series = [SeriesPoints(POOL[i][0], POOL[i][1], points(rng, base, POOL[i][0])) for i in chosen]
    return Batch(agent_id="pos-1", boot_id="b1", seq=seq, created_ms=base, series=series)


def body(*batches: Batch) -> bytes:
    return encode(Envelope(version=2, batches=list(batches), sent_ms=MS, site="north", position="1"))


def collector(path: Path) -> Collector:
    path.mkdir()
    made = Collector(make_config(path))
    made.store.add_agent("pos-1", site="north", now_ms=MS)
    made.fleet.sync_agents(made.store.agents())
    return made


def view(fleet: Fleet) -> Snapshot:
    return {
        (name, key): (state.labels, repr(state.value), state.ts_ms, state.zero_streak)
        for name, by_labels in fleet.agents["pos-1"].series.items()
        for key, state in by_labels.items()
    }


def rows(store: Store) -> list[tuple[str, str, str, int, int]]:
    return sorted((r.name, r.labels, repr(r.value), r.ts_ms, r.zero_streak) for r in store.latest())


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_steady_batches_planned_by_shape_agree_with_the_strict_plan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fast, strict = collector(tmp_path / "fast"), collector(tmp_path / "strict")
    agent: AgentRow = fast.store.agents()[0]
    shape = rng.sample(range(len(POOL)), 6)
    base, seq, by_columns, longest, sent = MS, 0, 0, 0, []
    for _ in range(60):
        if rng.random() < 0.15:  # the agent's series change: one goes, one comes
            shape.remove(rng.choice(shape))
            shape.append(rng.choice([i for i in range(len(POOL)) if i not in shape]))
        group: list[bytes] = []
        for _ in range(rng.choice((1, 1, 1, 2))):  # sometimes two requests of the agent in one commit
            if sent and rng.random() < 0.1:
                group.append(rng.choice(sent))  # a resend: a duplicate
                continue
            backfill = rng.random() < 0.15
            at = base - 20_000 if backfill else base
            group.append(body(random_batch(rng, seq, at, shape)))
            sent.append(group[-1])
            seq += 1
            base += 0 if backfill else 5000
        quick: list[Pending] = []
        for request in group:
            pending = prepare_fast(agent, request)
            assert pending is not None
            by_columns += pending.columns is not None
            quick.append(pending)
        fast.ingestor.commit(quick)
        strict.ingestor.commit([prepare(agent, decode_envelope(request)) for request in group])
        assert view(fast.fleet) == view(strict.fleet)
        assert rows(fast.store) == rows(strict.store)
        longest = max(
            [longest] + [s[3] for k, s in view(fast.fleet).items() if k[0] == "lifeline_probe_success"]
        )
    assert by_columns >= 30  # most batches took the shape's path
    assert longest >= 2  # streaks of zeros ran across batches
    live = view(fast.fleet)
    for made in (fast, strict):
        made.store.close()
    again = Store(str(tmp_path / "fast" / "collector.db"))
    try:
        assert view(Fleet.load(again)) == live  # the agent_latest row holds the same
    finally:
        again.close()


def test_a_streak_of_zeros_runs_across_steady_batches_and_stops_at_the_first_success(tmp_path: Path) -> None:
    made = collector(tmp_path / "c")
    agent = made.store.agents()[0]
    labels = {"target": "cad", "role": "cad", "kind": "tcp"}

    def send(seq: int, base: int, values: list[float]) -> None:
        series = [
            SeriesPoints(
                "lifeline_probe_success", labels, [(base + 1000 * i, v) for i, v in enumerate(values)]
            ),
            SeriesPoints("lifeline_probe_loss_ratio", labels, [(base, 0.0)]),
        ]
        pending = prepare_fast(
            agent, body(Batch(agent_id="pos-1", boot_id="b1", seq=seq, created_ms=base, series=series))
        )
        assert pending is not None
        assert pending.columns is not None
        made.ingestor.commit([pending])

    def streak(name: str = "lifeline_probe_success") -> tuple[float, int]:
        state = next(iter(made.fleet.agents["pos-1"].series[name].values()))
        return state.value, state.zero_streak

    send(0, MS, [1.0, 0.0, 0.0])
    assert streak() == (0.0, 2)
    send(1, MS + 3000, [0.0, 0.0, 0.0])
    assert streak() == (0.0, 5)
    send(2, MS - 10_000, [0.0, 0.0])  # backfill: stored, moves nothing
    assert streak() == (0.0, 5)
    send(3, MS + 6000, [0.0, 1.0])
    assert streak() == (1.0, 0)
    assert streak("lifeline_probe_loss_ratio") == (0.0, 0)  # only probe success counts a streak
    made.store.close()


def test_positions_sending_the_same_series_share_its_labels_not_their_values(tmp_path: Path) -> None:
    made = collector(tmp_path / "c")
    made.store.add_agent("pos-2", site="north", now_ms=MS)
    made.fleet.sync_agents(made.store.agents())
    labels = {"target": "cad", "role": "cad", "kind": "tcp"}
    pendings = []
    for agent, value in zip(made.store.agents(), (1.0, 0.0), strict=True):
        series = [SeriesPoints("lifeline_probe_success", labels, [(MS, value)])]
        batch = Batch(agent_id=agent.id, boot_id="b1", seq=0, created_ms=MS, series=series)
        pending = prepare_fast(agent, body(batch))
        assert pending is not None
        assert pending.columns is not None
        pendings.append(pending)
    assert pendings[0].columns is not None
    assert pendings[1].columns is not None
    first, second = pendings[0].columns.shape, pendings[1].columns.shape
    assert first.labels[0] is second.labels[0]  # one label dict for the fleet
    assert first.labels_raw[0] is second.labels_raw[0]
    made.ingestor.commit(pendings)
    states = {
        agent: [(s.value, s.zero_streak) for s in view.series["lifeline_probe_success"].values()]
        for agent, view in made.fleet.agents.items()
    }
    assert states == {"pos-1": [(1.0, 0)], "pos-2": [(0.0, 1)]}
    made.store.close()
