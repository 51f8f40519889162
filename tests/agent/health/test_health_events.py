"""State changes become events exactly once; samples are catalog series the wire accepts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from lifeline_wire.catalog import CATALOG
from lifeline_wire.layers import CAUSES
from lifeline_wire.schema import Batch, Envelope, decode_envelope

Position = Any


def _kinds(events: list[Any]) -> Counter[str]:
    return Counter(e.type for e in events)


def test_first_evaluation_reports_every_layer_once(position: Callable[..., Position]) -> None:
    pos = position(settle=0)
    pos.second()
    events = pos.model.events()
    layer_events = [e for e in events if e.type == "health.layer"]
    assert sorted(e.attributes["layer"] for e in layer_events) == sorted(
        s.layer for s in pos.history[-1].layers if s.state != "unknown"
    )
    assert all(e.attributes["previous"] == "unknown" for e in layer_events)
    assert pos.model.events() == []  # drained


def test_a_cut_and_its_recovery_each_emit_one_event_per_change(position: Callable[..., Position]) -> None:
    pos = position()
    pos.model.events()
    pos.cond("router").down = True
    pos.run(3)
    cut = pos.model.events()
    behind = {"router", "internet", "vpn", "agency", "dns", "cad"}
    assert _kinds(cut) == {"health.layer": len(behind), "health.verdict": 1, "health.risk": 1}
    assert {e.attributes["layer"] for e in cut if e.type == "health.layer"} == behind
    assert all(e.attributes["state"] == "failed" for e in cut if e.type == "health.layer")
    verdict = next(e for e in cut if e.type == "health.verdict")
    assert verdict.attributes["verdict"] == "home router unreachable"
    assert verdict.attributes["layer"] == "router"
    assert verdict.attributes["previous"] == "healthy"
    assert verdict.attributes["backup_ready"] == "true"
    assert verdict.attributes["position"] == "12"
    risk = next(e for e in cut if e.type == "health.risk")
    assert (risk.attributes["band"], risk.attributes["previous"]) == ("page", "low")
    assert 0 <= float(risk.attributes["time_to_loss"]) <= 5

    pos.run(10)  # the outage goes on: nothing new to say
    assert pos.model.events() == []

    pos.clear()
    pos.run(20)
    back = pos.model.events()
    assert _kinds(back) == {"health.layer": len(behind), "health.verdict": 1, "health.risk": 1}
    assert all(e.attributes["state"] == "ok" for e in back if e.type == "health.layer")
    assert next(e for e in back if e.type == "health.verdict").attributes["verdict"] == "healthy"
    assert next(e for e in back if e.type == "health.risk").attributes["band"] == "low"


def test_changing_numbers_in_a_verdict_are_not_a_new_event(position: Callable[..., Position]) -> None:
    pos = position()
    pos.model.events()
    pos.facts["wifi"] = _wifi(-78.0)
    pos.run(20)
    first = [e for e in pos.model.events() if e.type == "health.verdict"]
    # The fading trend may be said first; then the weak signal, each once.
    verdicts = [e.attributes["verdict"] for e in first]
    assert verdicts[-1] == "Wi-Fi signal weak (−78 dBm)"
    assert verdicts[:-1] in ([], ["Wi-Fi signal fading (−68 dBm, -0.6 dB/s)"]), verdicts
    pos.facts["wifi"] = _wifi(-79.0)
    a = pos.run(5)[-1]
    assert a.verdict == "Wi-Fi signal weak (−79 dBm)"
    assert a.verdict_label == "Wi-Fi signal weak"
    assert [e for e in pos.model.events() if e.type == "health.verdict"] == []


def _wifi(dbm: float) -> Any:
    from lifeline_agent.health import WifiFacts

    return WifiFacts("wlan0", True, dbm)


def test_samples_are_catalog_series_the_collector_accepts(position: Callable[..., Position]) -> None:
    pos = position()
    assert pos.model.samples()  # settled: an assessment exists
    pos.cond("vpn").down = True
    a = pos.run(4)[-1]
    samples = pos.model.samples()
    for s in samples:
        spec = CATALOG[s.name]
        assert set(s.labels) == set(spec.labels), s
        assert s.ts_ms == int(a.at * 1000)
    states = {s.labels["layer"]: s.value for s in samples if s.name == "lifeline_layer_state"}
    assert states["vpn"] == 2.0
    assert states["router"] == 0.0
    assert len(states) == 9
    (info,) = [s for s in samples if s.name == "lifeline_verdict_info"]
    assert info.labels == {"layer": "vpn", "cause": "down", "verdict": "VPN tunnel down, internet fine"}
    (risk,) = [s for s in samples if s.name == "lifeline_cad_risk_ratio"]
    assert risk.value == 1.0
    mos = {s.labels["target"]: s.value for s in samples if s.name == "lifeline_probe_mos"}
    assert "cad-ping" not in mos  # nothing comes back through the dead tunnel
    assert mos["isp"] > 4.3

    batch = Batch("agent-12", "boot-1", 0, int(a.at * 1000), samples, pos.model.events(), priority=True)
    decoded = decode_envelope(msgspec.json.encode(Envelope(1, [batch], int(a.at * 1000))))
    assert len(decoded.batches[0].samples) == len(samples)
    assert {e.type for e in decoded.batches[0].events} >= {"health.layer", "health.verdict", "health.risk"}


def test_a_stable_position_sends_an_infinite_time_to_loss(position: Callable[..., Position]) -> None:
    pos = position()
    (ttl,) = [s for s in pos.model.samples() if s.name == "lifeline_cad_time_to_loss_seconds"]
    assert math.isinf(ttl.number)
    assert not [s for s in pos.model.samples(include_mos=False) if s.name == "lifeline_probe_mos"]


def test_the_verdict_travels_with_its_cause_as_a_field(position: Callable[..., Position]) -> None:
    """The collector decides from the cause label; the sentence is rendered from the same fields."""
    healthy = position()
    (info,) = [s for s in healthy.model.samples() if s.name == "lifeline_verdict_info"]
    assert (info.labels["layer"], info.labels["cause"]) == ("none", "none")

    lossy = position()
    lossy.cond("router").loss = 0.3
    a = lossy.run(40)[-1]
    assert (a.verdict_layer, a.verdict_cause) == ("link", "loss")
    assert a.layer("link").cause == "loss"
    (info,) = [s for s in lossy.model.samples() if s.name == "lifeline_verdict_info"]
    assert (info.labels["layer"], info.labels["cause"]) == ("link", "loss")
    (event,) = [e for e in lossy.model.events() if e.type == "health.verdict"][-1:]
    assert event.attributes["cause"] == "loss"

    slow = position()
    slow.cond("internet").delay = 0.2
    slow.cond("internet").noise = 0.005
    a = slow.run(25)[-1]
    assert (a.verdict_layer, a.verdict_cause) == ("internet", "latency")
    assert a.verdict.startswith("home internet (ISP) slow (RTT ")
    assert all(s.cause in CAUSES for s in a.layers)
