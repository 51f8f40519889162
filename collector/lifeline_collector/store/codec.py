"""How the store keeps a batch and an agent's latest series, and the rows it hands back.

A batch is one row: its samples are one compact blob (the JSON the agent sent, compressed with
LZ4), not one indexed row per sample. ``codec`` says which form: 1 the JSON array of samples (wire
version 1), 2 ``[samples, series]`` (version 2's series form, kept as sent); ``unpack_samples``
reads both into the same samples in the same order.

The latest value of every series of an agent is one blob too (``agent_latest``: the agent's whole
series state, msgpack + LZ4), rewritten once per commit that moves it, instead of one upserted
row per series; a restarted collector reads it back exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import cramjam
import msgspec

from lifeline_collector.errors import StoreError
from lifeline_wire import Batch, Event, Sample, SeriesPoints
from lifeline_wire.schema import every_sample

CODEC_NONE = 0  # no samples
CODEC_JSON_LZ4 = 1  # the JSON array of wire samples, LZ4 block with its size in front
CODEC_SERIES_LZ4 = 2  # JSON ``[samples, series]`` of a batch in the series form, LZ4 as above


def as_int(value: object) -> int:
    """A number read back from either engine."""
    if isinstance(value, int | float | str):
        return int(value)
    raise StoreError(f"expected a number from the store, got {value!r}")


def as_float(value: object) -> float:
    """SQLite stores NaN as NULL: read it back as NaN."""
    if value is None:
        return math.nan
    if isinstance(value, int | float | str):
        return float(value)
    raise StoreError(f"expected a number from the store, got {value!r}")


def as_blob(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise StoreError(f"expected a blob from the store, got {type(value).__name__}")


LABELS_KEY_CACHE_SIZE = 16_384
LABELS_KEY_TEXT_LIMIT = 512  # characters of a cached label set's text: real ones are a few dozen
_labels_keys: dict[tuple[tuple[str, str], ...], str] = {}


def labels_key(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set (sorted JSON), used as part of a series' identity.

    Every ingested sample needs one, and a fleet repeats the same few hundred label sets, so the
    text is cached by the labels as sent (bounded in entries and in size: agents choose label
    values, and a rejected or one-off long label set must not stay in memory).
    """
    items = tuple(labels.items())
    key = _labels_keys.get(items)
    if key is None:
        key = json.dumps(labels, sort_keys=True, separators=(",", ":"))
        if len(key) > LABELS_KEY_TEXT_LIMIT:
            return key
        if len(_labels_keys) >= LABELS_KEY_CACHE_SIZE:
            _labels_keys.clear()
        _labels_keys[items] = key
    return key


_samples_decoder = msgspec.json.Decoder(list[Sample])
_both_decoder = msgspec.json.Decoder(tuple[list[Sample], list[SeriesPoints]])
json_encoder = msgspec.json.Encoder()
# One agent's latest series: (name, labels_key, value, ts_ms, zero_streak) each (msgpack keeps NaN).
LatestState = tuple[str, str, float, int, int]
_states_encoder = msgspec.msgpack.Encoder()
_states_decoder = msgspec.msgpack.Decoder(list[LatestState])


def pack_samples(samples_json: bytes | memoryview | msgspec.Raw) -> bytes:
    """The blob of a batch's samples: their JSON array, LZ4-compressed (size in front)."""
    return bytes(cramjam.lz4.compress_block(samples_json))


def pack_series(
    samples_json: bytes | memoryview | msgspec.Raw, series_json: bytes | memoryview | msgspec.Raw
) -> bytes:
    """The blob of a batch in the series form (``CODEC_SERIES_LZ4``): ``[samples, series]`` as sent."""
    return bytes(cramjam.lz4.compress_block(b"".join((b"[", samples_json, b",", series_json, b"]"))))


def unpack_samples(codec: int, blob: bytes | None) -> list[Sample]:
    """The samples of one stored batch in their canonical order (``Batch.every_sample``): the
    samples as sent, then each series' points, series by series. Sample numbers follow it."""
    if codec == CODEC_NONE or blob is None:
        return []
    if codec not in (CODEC_JSON_LZ4, CODEC_SERIES_LZ4):
        raise StoreError(f"unknown sample codec {codec} (a newer collector wrote this store?)")
    try:
        text = bytes(cramjam.lz4.decompress_block(blob))
        if codec == CODEC_JSON_LZ4:
            return _samples_decoder.decode(text)
        samples, series = _both_decoder.decode(text)
    except (cramjam.DecompressionError, msgspec.DecodeError) as exc:
        raise StoreError(f"a stored batch's samples are unreadable: {exc}") from None
    return every_sample(samples, series)


def encode_states(states: Sequence[LatestState]) -> bytes:
    """The blob of one agent's ``agent_latest`` row."""
    return bytes(cramjam.lz4.compress_block(_states_encoder.encode(states)))


def decode_states(blob: bytes | None, agent: str | None = None) -> list[LatestState]:
    """One agent's series back from its ``agent_latest`` blob (``agent`` names it in the error)."""
    try:
        return _states_decoder.decode(bytes(cramjam.lz4.decompress_block(blob or b"")))
    except (cramjam.DecompressionError, msgspec.DecodeError) as exc:
        whose = f"agent {agent}" if agent is not None else "an agent"
        raise StoreError(f"the latest values of {whose} are unreadable: {exc}") from None


@dataclass(frozen=True, slots=True)
class LatestRow:
    agent: str
    name: str
    labels: str  # labels_key
    value: float
    ts_ms: int
    zero_streak: int


@dataclass(frozen=True, slots=True)
class SeqTotals:
    jumps: int  # sequence numbers skipped when they were first seen (only grows)
    missing: int  # sequence numbers not received yet (shrinks when late batches arrive)


class BatchHead(Protocol):
    """What a stored batch takes from a decoded one, besides its samples."""

    @property
    def boot_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def created_ms(self) -> int: ...
    @property
    def priority(self) -> bool: ...
    @property
    def events(self) -> list[Event]: ...


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One batch as the store keeps it: its identity, and its samples as one blob."""

    boot_id: str
    seq: int
    created_ms: int
    priority: bool
    sample_count: int
    min_ts: int | None
    max_ts: int | None
    blob: bytes | None  # pack_samples() or pack_series(), as ``codec`` says; None without samples
    events: Sequence[Event] = ()
    codec: int = CODEC_JSON_LZ4

    @classmethod
    def make(
        cls,
        head: BatchHead,
        samples_json: bytes | memoryview | msgspec.Raw,
        series_json: bytes | memoryview | msgspec.Raw | None,
        count: int,
        min_ts: int | None,
        max_ts: int | None,
    ) -> BatchRow:
        """From a batch (or the same fields of a faster decode) whose measurements are already
        JSON: ingest keeps the bytes the agent sent — the samples array alone, or with the series
        of the series form (``series_json``; then ``CODEC_SERIES_LZ4``)."""
        if series_json is None:
            blob, codec = (pack_samples(samples_json) if count else None), CODEC_JSON_LZ4
        else:
            blob, codec = (pack_series(samples_json, series_json) if count else None), CODEC_SERIES_LZ4
        return cls(
            head.boot_id,
            head.seq,
            head.created_ms,
            head.priority,
            count,
            min_ts,
            max_ts,
            blob,
            head.events,
            codec,
        )

    @classmethod
    def of(cls, batch: Batch) -> BatchRow:
        stamps = [sample.ts_ms for sample in batch.every_sample()]
        return cls.make(
            batch,
            json_encoder.encode(batch.samples),
            json_encoder.encode(batch.series) if batch.series else None,
            len(stamps),
            min(stamps, default=None),
            max(stamps, default=None),
        )
