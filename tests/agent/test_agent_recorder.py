"""The recorder accepts only catalog metrics with their declared labels."""

from __future__ import annotations

import logging
import math

import msgspec
import pytest

from lifeline_agent.recorder import Recorder, series_key
from lifeline_wire import SCHEMA_VERSION, Batch, Envelope, decode_envelope, encode
from lifeline_wire.schema import MAX_EVENT_ATTRIBUTE_LENGTH, MAX_EVENT_ATTRIBUTES, MAX_LABEL_VALUE

LABELS = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}
TS = 1_800_000_000_000


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


def verdict(layer: str, words: str, cause: str = "none") -> dict[str, str]:
    return {"layer": layer, "cause": cause, "verdict": words}


def test_a_new_verdict_replaces_the_old_one_and_the_old_one_is_sent_at_zero() -> None:
    rec = Recorder()
    first, second = verdict("none", "no measurements yet"), verdict("none", "healthy")
    third = verdict("internet", "home internet losing packets", "loss")
    rec.sample("lifeline_verdict_info", 1, first, ts_ms=1_000)
    rec.sample("lifeline_verdict_info", 1, second, ts_ms=2_000)
    rec.sample("lifeline_verdict_info", 1, second, ts_ms=3_000)  # the same verdict again: no zero
    rec.sample("lifeline_verdict_info", 1, third, ts_ms=4_000)
    assert rec.latest() == {series_key("lifeline_verdict_info", third): 1.0}
    samples, _ = rec.drain()
    sent = [(s.labels["verdict"], s.value, s.ts_ms) for s in samples]
    assert sent == [
        ("no measurements yet", 1.0, 1_000),
        ("no measurements yet", 0.0, 2_000),
        ("healthy", 1.0, 2_000),
        ("healthy", 1.0, 3_000),
        ("healthy", 0.0, 4_000),
        ("home internet losing packets", 1.0, 4_000),
    ]
    # What a store keeping the newest value per label set ends up with: one verdict at 1.
    newest = {tuple(sorted(s.labels.items())): s.value for s in samples}
    assert sorted(newest.values()) == [0.0, 0.0, 1.0]


def test_a_verdict_that_comes_back_replaces_the_one_in_between() -> None:
    rec = Recorder()
    healthy, lossy = verdict("none", "healthy"), verdict("internet", "home internet losing packets", "loss")
    for labels in (healthy, lossy, healthy):
        rec.sample("lifeline_verdict_info", 1, labels)
    assert rec.latest() == {series_key("lifeline_verdict_info", healthy): 1.0}
    samples, _ = rec.drain()
    assert [(s.labels["verdict"], s.value) for s in samples][-2:] == [
        ("home internet losing packets", 0.0),
        ("healthy", 1.0),
    ]


def test_a_changed_fact_label_on_a_gauge_replaces_the_series_without_a_made_up_zero() -> None:
    rec = Recorder()
    rec.sample("lifeline_cellular_signal_quality_ratio", 0.8, {"modem": "0", "access_technology": "lte"})
    rec.sample("lifeline_cellular_signal_quality_ratio", 0.5, {"modem": "0", "access_technology": "3g"})
    rec.sample("lifeline_cellular_signal_quality_ratio", 0.6, {"modem": "1", "access_technology": "lte"})
    assert rec.latest() == {
        series_key("lifeline_cellular_signal_quality_ratio", {"modem": "0", "access_technology": "3g"}): 0.5,
        series_key("lifeline_cellular_signal_quality_ratio", {"modem": "1", "access_technology": "lte"}): 0.6,
    }
    samples, _ = rec.drain()
    assert [s.value for s in samples] == [0.8, 0.5, 0.6]  # a signal quality of 0 was never measured


def test_an_interface_that_changes_path_keeps_one_series_per_direction() -> None:
    rec = Recorder()
    for path in ("primary", "backup"):
        for direction in ("rx", "tx"):
            labels = {"interface": "wlan0", "path": path, "direction": direction}
            rec.sample("lifeline_interface_bytes_total", 10, labels)
    assert sorted(dict(labels)["direction"] for _name, labels in rec.latest()) == ["rx", "tx"]
    assert {dict(labels)["path"] for _name, labels in rec.latest()} == {"backup"}


def test_a_non_finite_event_attribute_travels_as_the_wire_spells_it() -> None:
    rec = Recorder()
    rec.event("health.risk", {"risk": math.nan, "time_to_loss": math.inf, "drift": -math.inf, "rtt": 0.5})
    batch = Batch(agent_id="ws-1", boot_id="b", seq=0, created_ms=1_800_000_000_000, events=rec.drain()[1])
    # JSON has no infinity: a float would be encoded as null, and the batch could not be read back.
    decoded = msgspec.json.decode(encode(batch), type=Batch)
    assert decoded.events[0].attributes == {
        "risk": "NaN",
        "time_to_loss": "+Inf",
        "drift": "-Inf",
        "rtt": 0.5,
    }


@pytest.mark.parametrize(
    ("type_", "attributes", "message"),
    [
        ("Health Risk", {}, "event type"),
        ("health.risk", {"time-to-loss": 1}, "attribute name"),
    ],
)
def test_an_event_the_contract_refuses_is_a_bug(type_: str, attributes: dict[str, int], message: str) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match=message):
        rec.event(type_, attributes)
    assert rec.pending() == 0


def test_a_target_no_longer_probed_leaves_the_page() -> None:
    rec = Recorder()
    gone = {"target": "gateway-192.168.1.1", "role": "router", "path": "primary", "kind": "icmp"}
    rec.sample("lifeline_probe_success", 1, gone)
    rec.sample("lifeline_probe_rtt_seconds", 0.002, {**gone, "stat": "avg"})
    rec.sample("lifeline_probe_success", 1, LABELS)
    rec.forget_target("gateway-192.168.1.1")
    assert rec.latest() == {series_key("lifeline_probe_success", LABELS): 1.0}


def test_a_series_a_source_stops_reporting_leaves_the_page() -> None:
    rec = Recorder()
    on_battery = [
        ("lifeline_power_on_ac", 0.0, {}),
        ("lifeline_battery_ratio", 0.8, {}),
        ("lifeline_battery_time_left_seconds", 5400.0, {}),
    ]
    rec.sample_group("source:power", on_battery)
    rec.sample("lifeline_probe_success", 1, LABELS)  # not the source's: untouched
    rec.sample_group("source:power", [("lifeline_power_on_ac", 1.0, {}), ("lifeline_battery_ratio", 0.8, {})])
    assert series_key("lifeline_battery_time_left_seconds", {}) not in rec.latest()  # no time left on mains
    assert rec.latest()[series_key("lifeline_power_on_ac", {})] == 1.0
    rec.sample_group("source:power", [])  # a failed read: nothing is known now
    assert rec.latest() == {series_key("lifeline_probe_success", LABELS): 1.0}
    samples, _ = rec.drain()
    assert len(samples) == 6  # everything measured was sent; only the page forgets


def test_what_comes_from_the_world_is_made_to_fit_the_contract(caplog: pytest.LogCaptureFixture) -> None:
    """One value the collector refuses would cost the whole batch: the batch built from what the
    recorder holds passes the collector's own strict check."""
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.recorder"):
        rec.sample("lifeline_probe_rtt_seconds", 0.004, {**LABELS, "stat": "avg"})
        rec.sample("lifeline_probe_rtt_seconds", math.nan, {**LABELS, "stat": "avg"})
        rec.sample("lifeline_probe_jitter_seconds", math.inf, LABELS)
        rec.sample("lifeline_probe_jitter_seconds", math.inf, LABELS)
    rec.sample("lifeline_cad_time_to_loss_seconds", math.inf)  # declared: "+Inf" means stable
    rec.sample("lifeline_wifi_signal_dbm", -60, {"interface": "wl\u202egnp.exe"})
    rec.sample("lifeline_cellular_connected", 1, {"modem": "m" * 400})
    rec.event("forensics.traceroute", {"hops": "1 192.168.1.1\n2 *\n" * 200, "note": "ok\x00"})
    samples, events = rec.drain()
    batch = Batch(agent_id="ws-1", boot_id="b", seq=0, created_ms=TS, samples=samples, events=events)
    envelope = decode_envelope(encode(Envelope(version=SCHEMA_VERSION, batches=[batch], sent_ms=TS)))
    sent = envelope.batches[0]
    assert [(s.name, s.value) for s in sent.samples] == [
        ("lifeline_probe_rtt_seconds", 0.004),
        ("lifeline_cad_time_to_loss_seconds", "+Inf"),
        ("lifeline_wifi_signal_dbm", -60.0),
        ("lifeline_cellular_connected", 1.0),
    ]
    assert sent.samples[2].labels == {"interface": "wl\ufffdgnp.exe"}
    assert len(sent.samples[3].labels["modem"]) == MAX_LABEL_VALUE
    hops = sent.events[0].attributes["hops"]
    assert isinstance(hops, str)
    assert len(hops) == MAX_EVENT_ATTRIBUTE_LENGTH
    assert hops.startswith("1 192.168.1.1\ufffd2 *\ufffd")
    assert sent.events[0].attributes["note"] == "ok\ufffd"
    # A value that could not be sent is not shown as if it were the last good one either.
    assert series_key("lifeline_probe_rtt_seconds", {**LABELS, "stat": "avg"}) not in rec.latest()
    assert dict(rec.not_finite) == {"lifeline_probe_rtt_seconds": 1, "lifeline_probe_jitter_seconds": 2}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2  # once per metric


def test_an_event_with_more_attributes_than_the_contract_takes_is_a_bug() -> None:
    with pytest.raises(ValueError, match="at most"):
        Recorder().event("health.risk", {f"a{n}": n for n in range(MAX_EVENT_ATTRIBUTES + 1)})
