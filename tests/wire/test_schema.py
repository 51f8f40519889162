"""Wire contract v1: round trips, strict decoding, and errors that name the field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeline_wire import (
    SCHEMA_VERSION,
    Batch,
    Envelope,
    Event,
    IngestResponse,
    ItemResult,
    Sample,
    WireError,
    decode_envelope,
    decode_response,
    encode,
)

TS = 1_763_700_000_000


def envelope_dict(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
        "sent_ms": TS + 5_000,
        "site": "north",
        "position": "Position 12",
        "batches": [
            {
                "agent_id": "pos-12",
                "boot_id": "b0a1",
                "seq": 7,
                "created_ms": TS,
                "samples": [
                    {
                        "name": "lifeline_probe_rtt_seconds",
                        "value": 0.0213,
                        "ts_ms": TS,
                        "labels": {
                            "target": "cad",
                            "role": "cad",
                            "path": "tunnel",
                            "kind": "icmp",
                            "stat": "avg",
                        },
                    }
                ],
                "events": [
                    {"type": "link.down", "ts_ms": TS, "attributes": {"interface": "eth0", "carrier": False}}
                ],
            }
        ],
    }
    body.update(overrides)
    return body


def test_round_trip_keeps_every_field() -> None:
    envelope = Envelope(
        version=SCHEMA_VERSION,
        sent_ms=TS,
        site="north",
        position="12",
        batches=[
            Batch(
                agent_id="pos-12",
                boot_id="boot1",
                seq=3,
                created_ms=TS,
                priority=True,
                samples=[Sample(name="lifeline_probe_success", value=1.0, ts_ms=TS, labels={"target": "gw"})],
                events=[
                    Event(type="layer.changed", ts_ms=TS + 1, attributes={"layer": "vpn", "to": "failed"})
                ],
            )
        ],
    )
    assert decode_envelope(encode(envelope)) == envelope


def test_valid_body_decodes() -> None:
    envelope = decode_envelope(json.dumps(envelope_dict()).encode())
    batch = envelope.batches[0]
    assert (batch.agent_id, batch.boot_id, batch.seq) == ("pos-12", "b0a1", 7)
    assert batch.samples[0].labels["stat"] == "avg"
    assert batch.events[0].attributes == {"interface": "eth0", "carrier": False}


def _error_for(body: bytes) -> WireError:
    with pytest.raises(WireError) as info:
        decode_envelope(body)
    return info.value


@pytest.mark.parametrize(
    ("mutate", "path", "reason_part"),
    [
        (lambda b: b["batches"][0].__setitem__("seq", "seven"), "$.batches[0].seq", "Expected `int`"),
        (lambda b: b["batches"][0].__setitem__("seq", -1), "$.batches[0].seq", ">= 0"),
        (
            lambda b: b["batches"][0]["samples"][0].__setitem__("value", "x"),
            "$.batches[0].samples[0].value",
            "Invalid enum value",
        ),
        (
            lambda b: b["batches"][0]["samples"][0].__setitem__("ts_ms", 1_763_700_000),
            "$.batches[0].samples[0].ts_ms",
            ">=",
        ),
        (
            lambda b: b["batches"][0]["samples"][0].__setitem__("name", "bad name"),
            "$.batches[0].samples[0].name",
            "match",
        ),
        (lambda b: b["batches"][0].__setitem__("extra", 1), "$.batches[0]", "unknown field `extra`"),
        (lambda b: b["batches"][0].pop("agent_id"), "$.batches[0]", "missing required field `agent_id`"),
        (lambda b: b["batches"][0].__setitem__("agent_id", "../etc"), "$.batches[0].agent_id", "match"),
        (lambda b: b.__setitem__("batches", []), "$.batches", "length >= 1"),
        (
            lambda b: b["batches"][0]["events"][0].__setitem__("type", "Link Down"),
            "$.batches[0].events[0].type",
            "match",
        ),
    ],
)
def test_errors_name_the_field(mutate: Any, path: str, reason_part: str) -> None:
    body = envelope_dict()
    mutate(body)
    error = _error_for(json.dumps(body).encode())
    assert error.path == path
    assert reason_part in error.reason
    assert str(error).startswith(path)


def test_unknown_schema_version_is_named_even_when_fields_changed() -> None:
    body = envelope_dict(version=3)
    body["batches"][0]["new_field_of_v3"] = True
    error = _error_for(json.dumps(body).encode())
    assert error.path == "$.version"
    assert error.reason == "unsupported schema version 3 (this end speaks 1 and 2)"


def test_truncated_json() -> None:
    raw = json.dumps(envelope_dict()).encode()
    error = _error_for(raw[: len(raw) // 2])
    assert error.path == "$"
    assert "truncated" in error.reason.lower() or "malformed" in error.reason.lower()


def test_batches_from_two_agents_are_rejected() -> None:
    body = envelope_dict()
    second = json.loads(json.dumps(body["batches"][0]))
    second["agent_id"] = "pos-13"
    body["batches"].append(second)
    error = _error_for(json.dumps(body).encode())
    assert error.path == "$.batches[1].agent_id"


def test_response_round_trip() -> None:
    response = IngestResponse(
        results=[ItemResult(boot_id="b", seq=1, status="accepted"), ItemResult("b", 2, "rejected", "bad")],
        server_ms=TS,
    )
    assert decode_response(encode(response)) == response
    with pytest.raises(WireError) as info:
        decode_response(b'{"results": [{"boot_id": "b", "seq": 1, "status": "maybe"}]}')
    assert info.value.path == "$.results[0].status"


# Any text but what the contract refuses in a label value (see ``unsafe_char``).
UNSAFE = "\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
label_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=UNSAFE), max_size=20
)


@given(
    seq=st.integers(min_value=0, max_value=2**53 - 1),
    value=st.floats(allow_nan=False, allow_infinity=False),
    labels=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), label_values, max_size=5),
)
def test_any_valid_batch_round_trips(seq: int, value: float, labels: dict[str, str]) -> None:
    batch = Batch(
        agent_id="a",
        boot_id="b",
        seq=seq,
        created_ms=TS,
        samples=[Sample(name="lifeline_probe_success", value=value, ts_ms=TS, labels=labels)],
    )
    envelope = Envelope(version=1, batches=[batch], sent_ms=TS)
    decoded = decode_envelope(encode(envelope))
    assert decoded == envelope
    assert decoded.batches[0].samples[0].number == value


@pytest.mark.parametrize(("value", "spelled"), [(math.inf, "+Inf"), (-math.inf, "-Inf")])
def test_non_finite_values_travel_as_prometheus_spells_them(value: float, spelled: str) -> None:
    sample = Sample(name="lifeline_cad_time_to_loss_seconds", value=value, ts_ms=TS)
    assert sample.value == spelled
    raw = encode(Envelope(version=1, sent_ms=TS, batches=[Batch("a", "b", 0, TS, samples=[sample])]))
    assert f'"value":"{spelled}"'.encode() in raw
    assert decode_envelope(raw).batches[0].samples[0].number == value


def test_nan_round_trips_as_nan() -> None:
    sample = Sample(name="lifeline_probe_success", value=math.nan, ts_ms=TS)
    assert sample.value == "NaN"
    assert math.isnan(sample.number)
