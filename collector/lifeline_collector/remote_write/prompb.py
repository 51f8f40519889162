"""Prometheus remote-write v1 messages (``prompb``), built at runtime from a descriptor.

The four messages of the remote-write 1.0 specification are described here with a
``FileDescriptorProto`` in a private descriptor pool, so no protoc, no generated module and no
clash with another library that registers ``prometheus.*`` in the default pool. ``encode`` turns
Lifeline series into the snappy-compressed body a receiver expects; ``decode`` is its inverse,
used by tests and for debugging a captured request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "prometheus"
METRIC_NAME_LABEL = "__name__"

# The headers of every request: the body is this module's encoding, the version the spec's.
PROTOCOL_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "lifeline-collector",
}

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    message: Any, name: str, number: int, kind: int, type_name: str = "", repeated: bool = False
) -> None:
    field = message.field.add()
    field.name = name
    field.number = number
    field.type = kind
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = f".{PACKAGE}.{type_name}"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    proto.name = "lifeline/prompb/remote.proto"
    proto.package = PACKAGE
    proto.syntax = "proto3"

    write_request = proto.message_type.add()
    write_request.name = "WriteRequest"
    _field(write_request, "timeseries", 1, _F.TYPE_MESSAGE, "TimeSeries", repeated=True)
    # 2 is used by Cortex, 3 by Prometheus for metadata: reserved by the spec.
    for number in (2, 3):
        reserved = write_request.reserved_range.add()
        reserved.start = number
        reserved.end = number + 1

    series = proto.message_type.add()
    series.name = "TimeSeries"
    _field(series, "labels", 1, _F.TYPE_MESSAGE, "Label", repeated=True)
    _field(series, "samples", 2, _F.TYPE_MESSAGE, "Sample", repeated=True)

    label = proto.message_type.add()
    label.name = "Label"
    _field(label, "name", 1, _F.TYPE_STRING)
    _field(label, "value", 2, _F.TYPE_STRING)

    sample = proto.message_type.add()
    sample.name = "Sample"
    _field(sample, "value", 1, _F.TYPE_DOUBLE)
    _field(sample, "timestamp", 2, _F.TYPE_INT64)
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
_FILE_DESCRIPTOR = _POOL.FindFileByName("lifeline/prompb/remote.proto")

WriteRequest: Any = message_factory.GetMessageClass(_FILE_DESCRIPTOR.message_types_by_name["WriteRequest"])
TimeSeries: Any = message_factory.GetMessageClass(_FILE_DESCRIPTOR.message_types_by_name["TimeSeries"])
Label: Any = message_factory.GetMessageClass(_FILE_DESCRIPTOR.message_types_by_name["Label"])
Sample: Any = message_factory.GetMessageClass(_FILE_DESCRIPTOR.message_types_by_name["Sample"])

Labels = tuple[tuple[str, str], ...]
# (labels incl. __name__, value, timestamp in ms) — labels from ``series_labels``.
RemoteSample = tuple[Labels, float, int]


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a write request: labels (``__name__`` included) and (value, ts_ms) samples."""

    labels: Labels
    samples: tuple[tuple[float, int], ...]


def normalize_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Labels as the spec wants them: sorted by name, empty values dropped, ``__name__`` present.

    Prometheus treats an empty value as an absent label, so dropping it changes nothing but the
    bytes. Byte order puts ``__name__`` first for every lower-case name Lifeline uses.
    """
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    out: dict[str, str] = {}
    for name, value in pairs:
        if not name:
            raise ValueError("label name must not be empty")
        if name in out:
            raise ValueError(f"label {name!r} appears twice")
        out[name] = value
    if not out.get(METRIC_NAME_LABEL):
        raise ValueError(f"series has no {METRIC_NAME_LABEL} label: {sorted(out)}")
    return tuple(sorted((name, value) for name, value in out.items() if value))


def series_labels(name: str, labels: Mapping[str, str]) -> Labels:
    """The label set of one series: ``name`` as ``__name__`` plus ``labels``, sorted per the spec."""
    return normalize_labels({**labels, METRIC_NAME_LABEL: name})


def group(samples: Iterable[RemoteSample]) -> list[Series]:
    """Group (labels, value, ts_ms) samples into series, samples in timestamp order per series."""
    by_series: dict[Labels, list[tuple[float, int]]] = {}
    for labels, value, ts_ms in samples:
        by_series.setdefault(labels, []).append((value, ts_ms))
    return [
        Series(labels, tuple(sorted(points, key=lambda point: point[1])))
        for labels, points in by_series.items()
    ]


def build_request(series: Sequence[Series]) -> Any:
    """A ``WriteRequest`` message for already-normalized series."""
    request = WriteRequest()
    for item in series:
        message = request.timeseries.add()
        for name, value in item.labels:
            if not value:  # an empty value is an absent label in Prometheus
                continue
            label = message.labels.add()
            label.name = name
            label.value = value
        for sample_value, ts_ms in item.samples:
            sample = message.samples.add()
            sample.value = sample_value
            sample.timestamp = ts_ms
    return request


def serialize(series: Sequence[Series]) -> bytes:
    """The uncompressed protobuf bytes of a write request."""
    data: bytes = build_request(series).SerializeToString(deterministic=True)
    return data


def compress(data: bytes) -> bytes:
    """Snappy *block* format (not the framed stream), as remote-write requires."""
    return bytes(cramjam.snappy.compress_raw(data))


def encode(series: Sequence[Series]) -> bytes:
    """The HTTP body of a remote-write request: snappy(protobuf(WriteRequest))."""
    return compress(serialize(series))


def decode(body: bytes, *, compressed: bool = True) -> list[Series]:
    """Parse a request body back into series (the inverse of ``encode``)."""
    raw = bytes(cramjam.snappy.decompress_raw(body)) if compressed else body
    request = WriteRequest()
    request.ParseFromString(raw)
    out: list[Series] = []
    for message in request.timeseries:
        labels = tuple((label.name, label.value) for label in message.labels)
        samples = tuple((float(sample.value), int(sample.timestamp)) for sample in message.samples)
        out.append(Series(labels, samples))
    return out
