"""Sample and label names are checked in ``Sample.__post_init__`` (with a set of names seen valid)
instead of a regex per name inside msgspec: the contract and its errors must stay the same."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from lifeline_wire import Sample, WireError, decode_envelope
from lifeline_wire import schema as wire_schema

TS = 1_763_700_000_000


def body(*samples: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "version": 1,
            "sent_ms": TS,
            "batches": [
                {"agent_id": "pos-1", "boot_id": "b1", "seq": 0, "created_ms": TS, "samples": list(samples)}
            ],
        }
    ).encode()


def sample(name: str = "lifeline_probe_success", **labels: str) -> dict[str, Any]:
    return {"name": name, "value": 1, "ts_ms": TS, "labels": labels or {"target": "cad"}}


def error_of(raw: bytes) -> WireError:
    with pytest.raises(WireError) as info:
        decode_envelope(raw)
    return info.value


@pytest.mark.parametrize("label", ["bad-label", "9starts_with_digit", "", "x" * 65, "spa ce"])
def test_a_bad_label_name_is_refused_and_named(label: str) -> None:
    error = error_of(body(sample(target="gw"), sample(**{label: "v"})))
    assert error.path == "$.batches[0].samples[1].labels"
    assert repr(label) in error.reason
    assert "does not match" in error.reason


@pytest.mark.parametrize("name", ["bad name", "9lives", "", "a" * 201, "dash-ed"])
def test_a_bad_metric_name_is_refused_and_named(name: str) -> None:
    error = error_of(body(sample(), sample(name=name)))
    assert error.path == "$.batches[0].samples[1].name"
    assert "match" in error.reason


def test_names_seen_valid_are_still_accepted_and_bad_ones_never_remembered() -> None:
    good = body(sample(target="gw", role="router"))
    first = decode_envelope(good)
    again = decode_envelope(good)
    assert first == again
    assert {"target", "role"} <= wire_schema._good_label_names
    for _ in range(2):  # a refused name is refused every time: it never enters the set
        assert error_of(body(sample(**{"bad-label": "v"}))).path.endswith(".labels")
    assert "bad-label" not in wire_schema._good_label_names


def test_the_set_of_remembered_names_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire_schema, "_good_label_names", set())
    monkeypatch.setattr(wire_schema, "_KNOWN_GOOD_LIMIT", 3)
    labels = {name: "v" for name in sorted(wire_schema._DECLARED_LABELS)[:10]}
    decoded = decode_envelope(body(sample(**labels)))
    assert decoded.batches[0].samples[0].labels == labels  # all valid, all accepted
    assert len(wire_schema._good_label_names) == 3


def test_made_up_names_are_checked_but_never_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid-looking name no metric declares is refused later (the catalog) and must not take
    the room of real names: a stream of made-up names leaves the sets as they were."""
    monkeypatch.setattr(wire_schema, "_good_label_names", set())
    monkeypatch.setattr(wire_schema, "_good_metric_names", set())
    for i in range(50):
        decode_envelope(body(sample(name=f"lifeline_made_up_{i}", **{f"made_up_{i}": "v"})))
    assert wire_schema._good_label_names == set()
    assert wire_schema._good_metric_names == set()


def test_constructing_a_sample_checks_names_too() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Sample(name="lifeline_probe_success", value=1.0, ts_ms=TS, labels={"bad-label": "x"})


def test_the_json_schema_still_states_the_patterns() -> None:
    _, components = msgspec.json.schema_components([Sample])
    properties = components["Sample"]["properties"]
    assert properties["name"]["pattern"] == wire_schema.METRIC_NAME_RE
    assert properties["labels"]["propertyNames"]["pattern"] == wire_schema.LABEL_NAME_RE
    assert properties["labels"]["maxProperties"] == wire_schema.MAX_LABELS
