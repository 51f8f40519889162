"""The ingest hot path after its optimisation: cached label keys, the catalog check's fast path,
samples applied in time order, and one row per sample number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from collector_kit import T0, make_config

from lifeline_collector.fleet import SeriesState
from lifeline_collector.ingest.admission import check_batch
from lifeline_collector.ingest.plan import plan
from lifeline_collector.ingest.strict import prepare
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow, labels_key
from lifeline_collector.store import codec as store_module
from lifeline_wire import Batch, Envelope, Sample

MS = int(T0 * 1000)
LABELS = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}


def test_labels_key_is_canonical_whatever_the_order_and_cached() -> None:
    forward = labels_key({"b": "2", "a": "1"})
    backward = labels_key({"a": "1", "b": "2"})
    assert forward == backward == json.dumps({"a": "1", "b": "2"}, sort_keys=True, separators=(",", ":"))
    assert labels_key({"b": "2", "a": "1"}) is forward  # the second call is served from the cache
    assert labels_key({}) == "{}"


def test_labels_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_labels_keys", {})
    monkeypatch.setattr(store_module, "LABELS_KEY_CACHE_SIZE", 4)
    keys = [labels_key({"target": f"t{i}"}) for i in range(10)]
    assert keys == [f'{{"target":"t{i}"}}' for i in range(10)]
    assert len(store_module._labels_keys) <= 4


def batch(*samples: Sample, seq: int = 0) -> Batch:
    return Batch(agent_id="pos-1", boot_id="b1", seq=seq, created_ms=MS, samples=list(samples))


def test_check_batch_names_the_first_bad_sample_after_good_ones() -> None:
    good = Sample("lifeline_probe_success", 1.0, MS, LABELS)
    assert check_batch(0, batch(good, good)) is None
    undeclared = Sample("lifeline_probe_success", 1.0, MS, {**LABELS, "colour": "red"})
    reason = check_batch(3, batch(good, good, undeclared, Sample("lifeline_made_up", 1.0, MS, {})))
    assert reason is not None
    assert reason.startswith("$.batches[3].samples[2].labels.colour: not a label of lifeline_probe_success")
    unknown = check_batch(0, batch(good, Sample("lifeline_made_up", 1.0, MS, {})))
    assert unknown == "$.batches[0].samples[1].name: unknown metric 'lifeline_made_up' (not in the catalog)"
    fewer = Sample("lifeline_probe_success", 1.0, MS, {"target": "cad"})  # a subset of the labels is fine
    assert check_batch(0, batch(fewer)) is None


def test_samples_sent_out_of_time_order_apply_in_time_order() -> None:
    samples = [
        Sample("lifeline_probe_success", value, MS + 1000 * i, LABELS)
        for i, value in ((2, 0.0), (0, 1.0), (1, 0.0))
    ]
    agent = AgentRow("pos-1", "", "", MS, None, None, None)
    pending = prepare(agent, Envelope(version=1, batches=[batch(*samples)], sent_ms=MS))
    key = ("lifeline_probe_success", labels_key(LABELS))
    state = plan(pending.candidates[key], None)
    assert state is not None
    assert (state.value, state.ts_ms, state.zero_streak) == (0.0, MS + 2000, 2)  # applied in time order
    older = SeriesState(LABELS, 0.0, MS + 1000, 7)  # known up to the second round: the third adds one
    state = plan(pending.candidates[key], older)
    assert state is not None
    assert (state.value, state.ts_ms, state.zero_streak) == (0.0, MS + 2000, 8)
    assert plan(pending.candidates[key], SeriesState(LABELS, 1.0, MS + 2000, 0)) is None  # nothing newer


def test_ingest_stores_every_sample_once_with_one_series_each(tmp_path: Path) -> None:
    collector = Collector(make_config(tmp_path))
    collector.store.add_agent("pos-1", now_ms=MS)
    collector.fleet.sync_agents(collector.store.agents())
    agent = collector.store.agents()[0]
    rounds = [
        Sample(name, value, MS + 1000 * i, LABELS)
        for i in range(5)
        for name, value in (("lifeline_probe_success", 1.0), ("lifeline_probe_consecutive_failures", 0.0))
    ]
    for seq in range(2):
        envelope = Envelope(version=1, batches=[batch(*rounds, seq=seq)], sent_ms=MS)
        answer = collector.ingest(agent, envelope)
        assert [r.status for r in answer.results] == ["accepted"]
    assert collector.store.count("samples") == 20
    assert collector.store.count("agent_latest") == 1  # the latest values: one row per agent
    assert sorted((r.name, r.ts_ms, r.zero_streak) for r in collector.store.latest()) == [
        ("lifeline_probe_consecutive_failures", MS + 4000, 0),  # zeros, but no rule reads its streak
        ("lifeline_probe_success", MS + 4000, 0),
    ]
    success = collector.fleet.agents["pos-1"].series["lifeline_probe_success"][labels_key(LABELS)]
    assert (success.value, success.ts_ms) == (1.0, MS + 4000)
    collector.store.close()
