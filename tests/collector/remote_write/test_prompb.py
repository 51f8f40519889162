"""The remote-write protobuf: spec field numbers, exact bytes, snappy block format, round trip."""

from __future__ import annotations

import cramjam
import pytest
from google.protobuf import descriptor

from lifeline_collector.remote_write import prompb

# WriteRequest{timeseries: [{labels: [{__name__: "up"}], samples: [{value: 1.0, timestamp: 5}]}]}
# worked out by hand from the protobuf wire format:
#   Label      0a 08 "__name__" 12 02 "up"                          (14 bytes)
#   Sample     09 <1.0 as little-endian double> 10 05                (11 bytes)
#   TimeSeries 0a 0e <Label> 12 0b <Sample>                          (29 bytes)
#   Request    0a 1d <TimeSeries>                                    (31 bytes)
TINY = (
    bytes.fromhex("0a1d0a0e0a08")
    + b"__name__"
    + bytes.fromhex("1202")
    + b"up"
    + bytes.fromhex("120b09000000000000f03f1005")
)


def test_field_numbers_and_types_match_the_spec() -> None:
    fd = descriptor.FieldDescriptor
    expected = {
        "WriteRequest": {"timeseries": (1, fd.TYPE_MESSAGE, True)},
        "TimeSeries": {"labels": (1, fd.TYPE_MESSAGE, True), "samples": (2, fd.TYPE_MESSAGE, True)},
        "Label": {"name": (1, fd.TYPE_STRING, False), "value": (2, fd.TYPE_STRING, False)},
        "Sample": {"value": (1, fd.TYPE_DOUBLE, False), "timestamp": (2, fd.TYPE_INT64, False)},
    }
    for message_name, fields in expected.items():
        message = getattr(prompb, message_name).DESCRIPTOR
        assert message.full_name == f"prometheus.{message_name}"
        got = {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}
        assert got == fields, message_name


def test_tiny_request_is_byte_exact() -> None:
    series = prompb.group([(prompb.normalize_labels({"__name__": "up"}), 1.0, 5)])
    assert prompb.serialize(series) == TINY
    assert len(TINY) == 31


def test_body_is_snappy_block_format_not_framed() -> None:
    series = prompb.group([(prompb.normalize_labels({"__name__": "up"}), 1.0, 5)])
    body = prompb.encode(series)
    assert body[0] == len(TINY)  # block format starts with the uncompressed length as a varint
    assert not body.startswith(b"\xff\x06\x00\x00sNaPpY")
    assert bytes(cramjam.snappy.decompress_raw(body)) == TINY


def test_round_trip_keeps_labels_values_and_millisecond_timestamps() -> None:
    labels = prompb.normalize_labels(
        {"site": "north", "__name__": "lifeline_probe_rtt_seconds", "agent": "pos-07", "target": "cad"}
    )
    samples = [(labels, 0.0123, 1_700_000_000_123), (labels, 0.5, 1_699_999_400_001)]
    other = prompb.normalize_labels({"__name__": "lifeline_agent_up", "agent": "pos-08"})
    decoded = prompb.decode(prompb.encode(prompb.group([*samples, (other, 1.0, -5)])))
    assert decoded == [
        prompb.Series(labels, ((0.5, 1_699_999_400_001), (0.0123, 1_700_000_000_123))),
        prompb.Series(other, ((1.0, -5),)),
    ]
    assert [name for name, _ in decoded[0].labels] == ["__name__", "agent", "site", "target"]


def test_labels_are_sorted_with_name_first_and_empty_values_dropped() -> None:
    labels = prompb.normalize_labels([("zone", "a"), ("interface", ""), ("__name__", "m"), ("agent", "x")])
    assert labels == (("__name__", "m"), ("agent", "x"), ("zone", "a"))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"agent": "x"}, "no __name__"),
        ({"__name__": ""}, "no __name__"),
        ([("__name__", "m"), ("a", "1"), ("a", "2")], "appears twice"),
        ({"__name__": "m", "": "v"}, "must not be empty"),
    ],
)
def test_bad_label_sets_are_refused(labels: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prompb.normalize_labels(labels)  # type: ignore[arg-type]


def test_empty_label_values_from_a_store_row_are_not_sent() -> None:
    # The store's rows carry site="" for an agent without a site; Prometheus would see no label.
    row_labels = (("__name__", "m"), ("agent", "pos-1"), ("site", ""))
    decoded = prompb.decode(prompb.encode([prompb.Series(row_labels, ((1.0, 1),))]))
    assert decoded[0].labels == (("__name__", "m"), ("agent", "pos-1"))
