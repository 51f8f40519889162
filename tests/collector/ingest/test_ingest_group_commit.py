"""The fast decode agrees with the strict one, and requests that arrive together share one commit
(answered only after it; a failed commit fails each of them, and stores none)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest
from collector_kit import T0, fast_agrees_with_strict, make_config

from lifeline_collector.errors import StoreError
from lifeline_collector.ingest.commit import Stored
from lifeline_collector.ingest.fast import prepare_fast
from lifeline_collector.ingest.group_commit import GroupCommit
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow, labels_key
from lifeline_wire import Batch, Envelope, Event, Sample, encode

MS = int(T0 * 1000)
CAD = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}
AGENT = AgentRow("pos-1", "", "", MS, None, None, None)


def body(*batches: Batch, version: int = 1) -> bytes:
    return encode(Envelope(version=version, batches=list(batches), sent_ms=MS, site="north", position="1"))


def rounds(seq: int, values: list[float], *, base: int = MS) -> Batch:
    """One batch: a CAD probe's success per round, a failure count, a NaN risk, and an event."""
    samples: list[Sample] = []
    for i, value in enumerate(values):
        ts = base + 1000 * i
        samples.append(Sample("lifeline_probe_success", value, ts, CAD))
        samples.append(Sample("lifeline_probe_consecutive_failures", 0.0, ts, dict(reversed(CAD.items()))))
    samples.append(Sample("lifeline_cad_risk_ratio", math.nan, base, {}))
    events = [Event("probe.state_change", base, {"target": "cad"})]
    return Batch(agent_id="pos-1", boot_id="b1", seq=seq, created_ms=base, samples=samples, events=events)


def test_fast_and_strict_decode_agree_on_series_zero_streaks_and_blobs() -> None:
    # Out of time order, two batches, zeros at the end, a series whose labels come in two orders.
    sent = body(rounds(1, [1.0, 0.0, 0.0], base=MS + 10_000), rounds(0, [0.0, 1.0, 0.0]))
    fast = fast_agrees_with_strict(AGENT, sent)
    success = fast.candidates[("lifeline_probe_success", labels_key(CAD))]
    assert (success.ts_ms, success.value) == (MS + 12_000, 0.0)
    assert success.points == [
        (MS, 0.0),
        (MS + 1000, 1.0),
        (MS + 2000, 0.0),
        (MS + 10_000, 1.0),
        (MS + 11_000, 0.0),
        (MS + 12_000, 0.0),
    ]


def test_equal_times_keep_the_first_sample_sent_like_the_strict_path() -> None:
    twice = [Sample("lifeline_probe_success", 1.0, MS, CAD), Sample("lifeline_probe_success", 0.0, MS, CAD)]
    sent = body(Batch(agent_id="pos-1", boot_id="b1", seq=0, created_ms=MS, samples=twice))
    fast = fast_agrees_with_strict(AGENT, sent)
    assert fast.candidates[("lifeline_probe_success", labels_key(CAD))].value == 1.0


@pytest.mark.parametrize(
    "sample",
    [
        Sample("lifeline_made_up", 1.0, MS, {}),  # not in the catalog
        Sample("lifeline_probe_success", 1.0, MS, {"colour": "red"}),  # not a label of it
        Sample("lifeline_probe_success", 1.0, MS, {"target": "x" * 300}),  # value too long
        Sample("lifeline_agent_up", 1.0, MS, {}),  # the collector's own metric
    ],
)
def test_anything_unusual_goes_to_the_strict_decoder(sample: Sample) -> None:
    sent = body(Batch(agent_id="pos-1", boot_id="b1", seq=0, created_ms=MS, samples=[sample]))
    assert prepare_fast(AGENT, sent) is None


def test_other_agents_versions_and_broken_json_go_to_the_strict_decoder() -> None:
    good = Batch(agent_id="pos-1", boot_id="b1", seq=0, created_ms=MS)
    assert prepare_fast(AGENT, body(good)) is not None
    assert prepare_fast(AGENT, body(Batch(agent_id="pos-2", boot_id="b1", seq=0, created_ms=MS))) is None
    assert prepare_fast(AGENT, body(good, version=1)) is not None
    assert prepare_fast(AGENT, body(good, version=3)) is None
    assert prepare_fast(AGENT, body(good)[:-1]) is None
    assert prepare_fast(AGENT, body(good).replace(b'"seq":0', b'"seq":-1')) is None


@pytest.fixture
def collector(tmp_path: Path) -> Collector:
    made = Collector(make_config(tmp_path))
    for agent in ("pos-1", "pos-2"):
        made.store.add_agent(agent, now_ms=MS)
    made.fleet.sync_agents(made.store.agents())
    return made


def agent_row(collector: Collector, agent: str) -> AgentRow:
    found = collector.store.agent(agent)
    assert found is not None
    return found


@pytest.mark.anyio
async def test_requests_submitted_together_share_one_commit_in_order(collector: Collector) -> None:
    evaluated: list[list[str]] = []

    def after(stored: list[Stored]) -> None:
        assert collector.store.count("batches") == 3  # committed before the alerts are judged
        evaluated.append([item.agent.id for item in stored])

    committer = GroupCommit(collector.ingestor, after)
    one = prepare_fast(agent_row(collector, "pos-1"), body(rounds(0, [0.0, 0.0])))
    # The same agent's next batch in the same commit continues the streak of the first.
    two = prepare_fast(agent_row(collector, "pos-1"), body(rounds(1, [0.0], base=MS + 5000)))
    again = prepare_fast(agent_row(collector, "pos-1"), body(rounds(1, [0.0], base=MS + 5000)))
    other = prepare_fast(
        agent_row(collector, "pos-2"),
        body(Batch(agent_id="pos-2", boot_id="b9", seq=0, created_ms=MS, samples=rounds(0, [1.0]).samples)),
    )
    group = [p for p in (one, two, again, other) if p is not None]
    assert len(group) == 4
    answers = await asyncio.gather(*(committer.submit(p) for p in group))
    assert [[r.status for r in answer.results] for answer in answers] == [
        ["accepted"],
        ["accepted"],
        ["duplicate"],
        ["accepted"],
    ]
    assert (committer.commits, committer.requests) == (1, 4)
    assert evaluated == [["pos-1", "pos-1", "pos-1", "pos-2"]]
    success = collector.fleet.agents["pos-1"].series["lifeline_probe_success"][labels_key(CAD)]
    assert (success.value, success.ts_ms, success.zero_streak) == (0.0, MS + 5000, 3)
    assert collector.store.count("samples", "pos-1") == 5 + 3
    assert [row.zero_streak for row in collector.store.latest() if row.name == "lifeline_probe_success"] == [
        3,
        0,
    ]
    collector.store.close()


@pytest.mark.anyio
async def test_a_failed_commit_fails_every_request_in_it_and_stores_none(
    collector: Collector, tmp_path: Path
) -> None:
    committer = GroupCommit(collector.ingestor, lambda stored: None)
    requests = [prepare_fast(agent_row(collector, "pos-1"), body(rounds(seq, [1.0]))) for seq in (0, 1)]
    blocker = sqlite3.connect(tmp_path / "collector.db", isolation_level=None)
    collector.store._db.execute("PRAGMA busy_timeout=50")  # fail fast while another writer holds the lock
    blocker.execute("BEGIN IMMEDIATE")
    try:
        outcomes = await asyncio.gather(
            *(committer.submit(p) for p in requests if p is not None), return_exceptions=True
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(outcomes) == 2
    assert all(isinstance(outcome, StoreError) for outcome in outcomes)
    assert collector.store.count("batches") == 0
    assert "pos-1" not in {a for a, view in collector.fleet.agents.items() if view.series}
    # The retry of the same requests is stored normally.
    answers = await asyncio.gather(*(committer.submit(p) for p in requests if p is not None))
    assert [answer.results[0].status for answer in answers] == ["accepted", "accepted"]
    collector.store.close()
