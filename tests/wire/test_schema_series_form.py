"""Wire contract v2's series form: round trips, strict errors that name the point, the shared
sample limit, non-finite values, and version 1 bodies still accepted as they were."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeline_wire import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Batch,
    Envelope,
    Sample,
    SeriesPoints,
    WireError,
    decode_envelope,
    encode,
)
from lifeline_wire.schema import MAX_SAMPLES_PER_BATCH

TS = 1_763_700_000_000
CAD = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}


def series_body(series: list[dict[str, Any]], samples: list[dict[str, Any]] | None = None) -> bytes:
    batch: dict[str, Any] = {
        "agent_id": "pos-12",
        "boot_id": "b0",
        "seq": 3,
        "created_ms": TS,
        "series": series,
    }
    if samples is not None:
        batch["samples"] = samples
    return json.dumps({"version": 2, "sent_ms": TS, "batches": [batch]}).encode()


def error_of(body: bytes) -> WireError:
    with pytest.raises(WireError) as caught:
        decode_envelope(body)
    return caught.value


def test_this_end_speaks_version_2_and_still_version_1() -> None:
    assert SCHEMA_VERSION == 2
    assert sorted(SUPPORTED_VERSIONS) == [1, 2]
    v1 = {
        "version": 1,
        "sent_ms": TS,
        "batches": [
            {
                "agent_id": "pos-12",
                "boot_id": "b0",
                "seq": 0,
                "created_ms": TS,
                "samples": [{"name": "lifeline_probe_success", "value": 1, "ts_ms": TS, "labels": CAD}],
            }
        ],
    }
    decoded = decode_envelope(json.dumps(v1).encode())
    assert decoded.version == 1
    assert decoded.batches[0].series == []
    assert decoded.batches[0].every_sample() == [Sample("lifeline_probe_success", 1.0, TS, CAD)]


def test_series_form_round_trips_and_reads_as_samples_in_order() -> None:
    batch = Batch(
        agent_id="pos-12",
        boot_id="b0",
        seq=3,
        created_ms=TS,
        samples=[Sample("lifeline_agent_info", 1.0, TS, {"version": "1"})],
        series=[
            SeriesPoints("lifeline_probe_success", CAD, [(TS, 1.0), (TS + 1000, 0.0)]),
            SeriesPoints("lifeline_cad_risk_ratio", {}, [(TS + 1000, math.nan), (TS, math.inf)]),
        ],
    )
    body = encode(Envelope(SCHEMA_VERSION, [batch], TS))
    assert b'"points":[[1763700000000,1.0],[1763700001000,0.0]]' in body
    assert b'[1763700001000,"NaN"],[1763700000000,"+Inf"]' in body  # JSON has no NaN: spelled
    decoded = decode_envelope(body).batches[0]
    assert decoded == batch
    assert decoded.sample_count() == 5
    assert [(s.name, s.ts_ms, s.value) for s in decoded.every_sample()] == [
        ("lifeline_agent_info", TS, 1.0),
        ("lifeline_probe_success", TS, 1.0),
        ("lifeline_probe_success", TS + 1000, 0.0),
        ("lifeline_cad_risk_ratio", TS + 1000, "NaN"),  # each point keeps its own time, as sent
        ("lifeline_cad_risk_ratio", TS, "+Inf"),
    ]
    assert math.isnan(decoded.every_sample()[3].number)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1_000_000_000_000, max_value=9_999_999_999_999),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_any_points_survive_the_round_trip(points: list[tuple[int, float]]) -> None:
    entry = SeriesPoints("lifeline_cad_risk_ratio", {"stat": "avg"}, points)  # may be NaN or ±Inf
    batch = Batch(agent_id="a", boot_id="b", seq=0, created_ms=TS, series=[entry])
    back = decode_envelope(encode(Envelope(SCHEMA_VERSION, [batch], TS))).batches[0].every_sample()
    assert [s.ts_ms for s in back] == [ts for ts, _ in points]
    for sample, (_, value) in zip(back, points, strict=True):
        assert sample.number == value or (math.isnan(sample.number) and math.isnan(value))


@pytest.mark.parametrize(
    ("points", "path", "words"),
    [
        (
            [[TS, 1.0], [TS, 2.0], [TS, "fast"]],
            "$.batches[0].series[3].points[2][1]",
            "Invalid enum value 'fast'",
        ),
        ([[TS, 1.0], [TS, 2.0], [1_700_000, 1.0]], "$.batches[0].series[3].points[2][0]", ">= 1000000000000"),
        ([[TS, 1.0], [TS, 2.0], [TS]], "$.batches[0].series[3].points[2]", "length 2"),
        ([[TS, 1.0], [TS, 2.0], {"ts": TS}], "$.batches[0].series[3].points[2]", "Expected `array`"),
        ([], "$.batches[0].series[3].points", "length >= 1"),
    ],
)
def test_a_bad_point_is_named_by_series_point_and_slot(points: list[Any], path: str, words: str) -> None:
    good = {"name": "lifeline_probe_success", "labels": CAD, "points": [[TS, 1.0]]}
    error = error_of(series_body([good, good, good, {"name": "lifeline_probe_success", "points": points}]))
    assert error.path == path
    assert words in error.reason


def test_a_series_without_points_is_refused() -> None:
    error = error_of(series_body([{"name": "lifeline_probe_success", "labels": CAD}]))
    assert (error.path, error.reason) == (
        "$.batches[0].series[0].points",
        "a series needs at least one point",
    )


@pytest.mark.parametrize(
    ("entry", "path", "words"),
    [
        ({"name": "9bad", "points": [[TS, 1.0]]}, "$.batches[0].series[0].name", "matching regex"),
        (
            {"name": "ok", "labels": {"bad-label": "x"}, "points": [[TS, 1]]},
            "$.batches[0].series[0].labels",
            "does not match",
        ),
        (
            {"name": "ok", "labels": {"a": "x" * 300}, "points": [[TS, 1]]},
            "$.batches[0].series[0].labels[...]",
            "length <= 256",
        ),
        ({"name": "ok", "points": [[TS, 1]], "unit": "s"}, "$.batches[0].series[0]", "unknown field `unit`"),
    ],
)
def test_series_names_and_labels_follow_the_sample_rules(
    entry: dict[str, Any], path: str, words: str
) -> None:
    error = error_of(series_body([entry]))
    assert error.path == path
    assert words in error.reason


def test_the_sample_limit_counts_samples_and_points_together() -> None:
    half = MAX_SAMPLES_PER_BATCH // 2
    points = [[TS + i, 1.0] for i in range(half)]
    sample = {"name": "lifeline_probe_success", "value": 1, "ts_ms": TS, "labels": CAD}
    at_limit = series_body([{"name": "lifeline_probe_success", "points": points}] * 2)
    assert decode_envelope(at_limit).batches[0].sample_count() == MAX_SAMPLES_PER_BATCH
    error = error_of(series_body([{"name": "lifeline_probe_success", "points": points}] * 2, [sample]))
    assert error.path == "$.batches[0].series"
    assert error.reason == (
        f"at most {MAX_SAMPLES_PER_BATCH} samples per batch (samples and series points together),"
        f" got {MAX_SAMPLES_PER_BATCH + 1}"
    )


def test_sample_form_errors_keep_their_wording_and_path_in_version_2() -> None:
    bad = {"name": "lifeline_probe_success", "value": "fast", "ts_ms": TS, "labels": CAD}
    error = error_of(series_body([], [bad]))
    assert error.path == "$.batches[0].samples[0].value"
    assert "Invalid enum value 'fast'" in error.reason


def test_non_finite_values_built_in_code_are_spelled_like_samples() -> None:
    entry = SeriesPoints("lifeline_cad_risk_ratio", {}, [(TS, -math.inf), (TS + 1, 0.5)])
    assert entry.points == [(TS, "-Inf"), (TS + 1, 0.5)]
    assert [s.value for s in entry.samples()] == ["-Inf", 0.5]
