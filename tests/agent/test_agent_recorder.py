"""The recorder accepts only catalog metrics with their declared labels."""

from __future__ import annotations

import pytest

from lifeline_agent.recorder import Recorder, series_key

LABELS = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}


def test_records_and_drains_samples_and_events() -> None:
    rec = Recorder()
    rec.sample("lifeline_probe_success", 1, LABELS, ts_ms=1_800_000_000_000)
    rec.event("probe.state_change", {"target": "cad", "state": "down"}, ts_ms=1_800_000_000_001)
    samples, events = rec.drain()
    assert [(s.name, s.value, s.labels, s.ts_ms) for s in samples] == [
        ("lifeline_probe_success", 1.0, LABELS, 1_800_000_000_000)
    ]
    assert [(e.type, e.attributes) for e in events] == [
        ("probe.state_change", {"target": "cad", "state": "down"})
    ]
    assert rec.drain() == ([], [])


def test_unknown_metric_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not in the catalog"):
        Recorder().sample("lifeline_made_up", 1, {})


@pytest.mark.parametrize(
    "labels",
    [
        {"target": "cad", "role": "cad", "path": "tunnel"},  # one missing
        {**LABELS, "host": "10.0.0.5"},  # one extra
    ],
)
def test_labels_must_match_the_declaration(labels: dict[str, str]) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="takes labels"):
        rec.sample("lifeline_probe_success", 1, labels)
    assert rec.pending() == 0


def test_latest_keeps_last_value_and_forget_drops_a_series() -> None:
    rec = Recorder()
    rec.sample("lifeline_probe_success", 1, LABELS)
    rec.sample("lifeline_probe_success", 0, LABELS)
    assert rec.latest() == {series_key("lifeline_probe_success", LABELS): 0.0}
    rec.forget("lifeline_probe_success", LABELS)
    assert rec.latest() == {}
