"""The fast decode: the ingest hot path, for a request that is what a healthy agent sends.

It reads the same JSON as ``lifeline_wire.decode_envelope`` with the same limits, in two steps: a
batch's samples stay raw bytes (they are stored as sent), then become untracked structs whose
labels stay raw too. Each distinct (name, labels) text is parsed and checked against the
catalog once (``_series_info``), not once per sample; an agent that keeps sending the same series
has their shape checked once (``_shape``) and its batch planned column-wise. Anything unusual (an
unknown metric, an odd label, another agent's batch, a version, an escaped character) returns
None and the strict decoder (``strict``) takes over, so errors keep their exact wording and path.

The structs below (``_Sample``, ``_Series``, ``_Batch``, ``_Envelope``) are not a copy of the wire
schema but a second reading of it, and must stay one: where ``lifeline_wire.schema`` decodes
samples, series and labels into validated objects, these keep them as ``msgspec.Raw`` (the bytes
sent, stored as the batch's blob and compared as text) and skip ``__post_init__`` and the GC,
which is what makes this path fast. Their field names, types, limits and defaults are the wire
schema's (imported from it, never restated); a request they would take differently from the
strict decoder is handed to it, and tests decode the same bodies both ways.
"""

from __future__ import annotations

from itertools import chain, compress, repeat
from operator import attrgetter, getitem, itemgetter
from typing import Annotated

import msgspec

from lifeline_collector.fleet import STREAK_METRICS, SeriesKey
from lifeline_collector.ingest.admission import ADMISSIBLE, DEFAULT_LIMITS, limits_problem
from lifeline_collector.ingest.pending import Candidate, Columns, Pending, Shape
from lifeline_collector.limits import LimitsSection
from lifeline_collector.store import AgentRow, BatchRow, labels_key
from lifeline_wire.schema import (
    MAX_BATCHES_PER_ENVELOPE,
    MAX_EVENTS_PER_BATCH,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_SAMPLES_PER_BATCH,
    NON_FINITE,
    NON_FINITE_METRICS,
    SUPPORTED_VERSIONS,
    Event,
    Identifier,
    NonFinite,
    SequenceNumber,
    TimestampMs,
    unsafe_char,
)
from lifeline_wire.schema import Point as WirePoint

_by_time = itemgetter(0)
_by_value = itemgetter(1)


class _Sample(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    name: str
    value: float | NonFinite
    ts_ms: TimestampMs
    labels: msgspec.Raw = msgspec.Raw(b"{}")


class _Series(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    name: str
    labels: msgspec.Raw = msgspec.Raw(b"{}")
    points: Annotated[list[WirePoint], msgspec.Meta(max_length=MAX_SAMPLES_PER_BATCH)] = []


class _Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    agent_id: Identifier
    boot_id: Identifier
    seq: SequenceNumber
    created_ms: TimestampMs
    samples: msgspec.Raw = msgspec.Raw(b"[]")
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS_PER_BATCH)] = []
    priority: bool = False
    series: msgspec.Raw = msgspec.Raw(b"[]")


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    version: int
    batches: Annotated[list[_Batch], msgspec.Meta(min_length=1, max_length=MAX_BATCHES_PER_ENVELOPE)]
    sent_ms: TimestampMs
    site: Annotated[str, msgspec.Meta(max_length=64)] = ""
    position: Annotated[str, msgspec.Meta(max_length=64)] = ""


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_samples_decoder = msgspec.json.Decoder(
    Annotated[list[_Sample], msgspec.Meta(max_length=MAX_SAMPLES_PER_BATCH)]
)
_series_decoder = msgspec.json.Decoder(
    Annotated[list[_Series], msgspec.Meta(max_length=MAX_SAMPLES_PER_BATCH)]
)
_labels_decoder = msgspec.json.Decoder(
    Annotated[
        dict[str, Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE)]],
        msgspec.Meta(max_length=MAX_LABELS),
    ]
)
_NAME = attrgetter("name")
_LABELS = attrgetter("labels")
_TS = attrgetter("ts_ms")
_POINTS = attrgetter("points")
_VALUE = attrgetter("value")

# The caches below are keyed by what agents send, so they remember only what was accepted (a
# refused request leaves nothing behind), only label texts of a plausible size (whitespace can pad
# a valid one to megabytes), and only so many: full, they start again.
SERIES_INFO_CACHE_SIZE = 16_384
LABELS_TEXT_LIMIT = (
    1024  # bytes of one label text, as sent, that a cache keeps; longer ones are decoded each time
)
_series_infos: dict[tuple[str, bytes], tuple[SeriesKey, dict[str, str]]] = {}


def _series_info(name: str, raw: bytes) -> tuple[SeriesKey, dict[str, str]] | None:
    """The series key and labels of a sample's (name, labels text), or None if the catalog refuses
    it or a label value carries an unsafe character (then the strict decoder names the culprit)."""
    found = _series_infos.get((name, raw))
    if found is not None:
        return found
    admissible = ADMISSIBLE.get(name)
    if admissible is None:
        return None
    try:
        labels = _labels_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not labels.keys() <= admissible or any(map(unsafe_char, labels.values())):
        return None
    info = ((name, labels_key(labels)), labels)
    if len(raw) <= LABELS_TEXT_LIMIT:
        if len(_series_infos) >= SERIES_INFO_CACHE_SIZE:
            _series_infos.clear()
        _series_infos[(name, raw)] = info
    return info


SHAPE_CACHE_SIZE = 65_536  # agents (authenticated: bounded by the registry)
LABEL_TEXTS_CACHE_SIZE = 16_384
_shapes: dict[str, Shape] = {}  # agent id → the shape of its last batch in the series form
_label_texts: dict[bytes, msgspec.Raw] = {}  # one copy of each label text the fleet sends


def _shape(agent: str, series: list[_Series]) -> Shape | None:
    """The shape of a batch's series (the agent's last one when they are the same), or None when a
    series is refused or listed twice: then the general path decides. What positions have in
    common (names, label texts and dicts, series keys) is one object for all of them."""
    names = list(map(_NAME, series))
    raws = list(map(_LABELS, series))  # compared as Raw: no copy of each label text
    shape = _shapes.get(agent)
    if shape is not None and shape.names == names and shape.labels_raw == raws:
        return shape
    texts = list(map(bytes, raws))
    infos = list(map(_series_info, names, texts))
    if None in infos:
        return None
    keys = [info[0] for info in infos if info is not None]
    if len(set(keys)) != len(keys):
        return None
    if len(_label_texts) >= LABEL_TEXTS_CACHE_SIZE:
        _label_texts.clear()
    # Not views into the body; only texts of a plausible size are shared.
    own = [
        _label_texts.setdefault(text, msgspec.Raw(text))
        if len(text) <= LABELS_TEXT_LIMIT
        else msgspec.Raw(text)
        for text in texts
    ]
    labels = [info[1] for info in infos if info is not None]  # never changed: shared
    shape = Shape([key[0] for key in keys], own, keys, labels, [name in STREAK_METRICS for name in names])
    if len(_shapes) >= SHAPE_CACHE_SIZE:
        _shapes.clear()
    _shapes[agent] = shape
    return shape


def _number(value: float | str) -> float:
    return NON_FINITE[value] if isinstance(value, str) else value


# The tails of the wire's non-finite values as a body carries them ("NaN", "+Inf", "-Inf"): each
# value holds exactly one; two scans cost less than three (a body is ~17 kB, a request ~150 µs).
_SPELLED = (b'NaN"', b'Inf"')
_IS_NON_FINITE_METRIC = NON_FINITE_METRICS.__contains__


def _needs_strict(
    body: bytes,
    envelope: _Envelope,
    decoded: list[tuple[list[_Sample], list[_Series]]],
    limits: LimitsSection,
) -> bool:
    """Whether the strict decoder must judge the request: an unsafe character in the site or
    position, events over a limit or with an unsafe attribute, a non-finite value where one must be
    finite — or anything these cheap tests cannot rule out (an escape sequence in the body)."""
    if b"\\" in body:  # an escaped character may spell anything: only the strict decoder reads it right
        return True
    if (envelope.site and unsafe_char(envelope.site)) or (
        envelope.position and unsafe_char(envelope.position)
    ):
        return True
    for index, batch in enumerate(envelope.batches):
        if batch.events:
            if limits_problem(index, batch.events, limits) is not None:
                return True
            for event in batch.events:
                for value in event.attributes.values():
                    if isinstance(value, str) and unsafe_char(value):
                        return True
    # Every non-finite value is one of the spelled tokens in the body: if the values of the metrics
    # that may be non-finite account for all of them, no other metric carries one (C loops only;
    # a token inside a label value or attribute makes the counts differ, and the strict path looks).
    spelled = sum(map(body.count, _SPELLED))
    if not spelled:
        return False
    allowed = 0
    for samples, series in decoded:
        if samples:
            chosen = compress(samples, map(_IS_NON_FINITE_METRIC, map(_NAME, samples)))
            allowed += sum(map(isinstance, map(_VALUE, chosen), repeat(str)))
        for entry in compress(series, map(_IS_NON_FINITE_METRIC, map(_NAME, series))):
            allowed += sum(map(isinstance, map(_by_value, entry.points), repeat(str)))
    return allowed != spelled


def prepare_fast(agent: AgentRow, body: bytes, limits: LimitsSection = DEFAULT_LIMITS) -> Pending | None:
    """A request decoded and checked the fast way, or None: then the strict path decides."""
    try:
        envelope = _envelope_decoder.decode(body)
        decoded = [
            (_samples_decoder.decode(batch.samples), _series_decoder.decode(batch.series))
            for batch in envelope.batches
        ]
    except (msgspec.DecodeError, RecursionError):
        return None
    if envelope.version not in SUPPORTED_VERSIONS or any(b.agent_id != agent.id for b in envelope.batches):
        return None
    if _needs_strict(body, envelope, decoded, limits):
        return None
    if len(envelope.batches) == 1 and decoded[0][1] and not decoded[0][0]:
        steady = _prepare_columns(agent, envelope, decoded[0][1])
        if steady is not None:
            return steady
    rows: list[tuple[int, BatchRow]] = []
    # Each series' newest point (the first sent among equal times): walked in the order sent,
    # a later point replaces it only if it is strictly newer.
    newest: dict[tuple[str, bytes], WirePoint] = {}
    parts: list[tuple[list[tuple[str, bytes]], list[_Sample], list[_Series]]] = []
    for index, (batch, (samples, series)) in enumerate(zip(envelope.batches, decoded, strict=True)):
        # Per sample and per point only C loops (map, zip, sorted, dict); Python runs per series.
        times = list(map(_TS, samples))
        points = list(map(_POINTS, series))
        counts = list(map(len, points))
        every = len(times) + sum(counts)
        if not all(counts) or every > MAX_SAMPLES_PER_BATCH:
            return None
        stamps, latest, latest_points = _newest_points(points)
        low = min(chain(times, map(min, stamps))) if every else None
        high = max(chain(times, latest)) if every else None
        series_json = batch.series if series else None
        rows.append((index, BatchRow.make(batch, batch.samples, series_json, every, low, high)))
        keys = list(zip(map(_NAME, samples), map(bytes, map(_LABELS, samples)), strict=True))
        parts.append((keys, samples, series))
        if samples:
            # Newest first, equal times in the order sent (sorting keeps stability with
            # reverse=True); walked oldest first, the last write per key is the one wanted.
            oldest_first = sorted(range(len(samples)), key=times.__getitem__, reverse=True)[::-1]
            for key, at in dict(zip(map(keys.__getitem__, oldest_first), oldest_first, strict=True)).items():
                known = newest.get(key)
                if known is None or times[at] > known[0]:
                    newest[key] = (times[at], samples[at].value)
        for entry, point in zip(series, latest_points, strict=True):
            key = (entry.name, bytes(entry.labels))
            known = newest.get(key)
            if known is None or point[0] > known[0]:
                newest[key] = point
    candidates: dict[SeriesKey, Candidate] = {}
    zeros: dict[tuple[str, bytes], Candidate] = {}
    for text_key, (ts_ms, raw_value) in newest.items():
        info = _series_info(*text_key)
        if info is None or info[0] in candidates:  # refused, or one label set spelled two ways
            return None
        value = _number(raw_value)
        candidate = candidates[info[0]] = Candidate(info[1], ts_ms, value, None)
        if value == 0 and text_key[0] in STREAK_METRICS:  # the streak of zeros needs every point
            zeros[text_key] = candidate
    if zeros:
        timelines: dict[tuple[str, bytes], list[WirePoint]] = {key: [] for key in zeros}
        for keys, samples, series in parts:  # gathered in the order sent, then sorted stably by time
            for at in compress(range(len(samples)), map(zeros.__contains__, keys)):
                timelines[keys[at]].append((samples[at].ts_ms, samples[at].value))
            for entry in series:
                timeline = timelines.get((entry.name, bytes(entry.labels)))
                if timeline is not None:
                    timeline += entry.points
        for key, timeline in timelines.items():
            timeline.sort(key=_by_time)
            zeros[key].points = timeline
    return Pending(
        agent, envelope.site, envelope.position, envelope.sent_ms, [None] * len(rows), rows, candidates
    )


def _newest_points(
    points: list[list[WirePoint]],
) -> tuple[list[list[int]], list[int], list[WirePoint]]:
    """Per series: its point times, its newest time and its newest point (the first sent among
    equal times) — C calls per series, none per point."""
    stamps = [list(map(_by_time, own)) for own in points]
    newest = list(map(max, stamps))
    at = list(map(list.index, stamps, newest))
    return stamps, newest, list(map(getitem, points, at))


def _prepare_columns(agent: AgentRow, envelope: _Envelope, series: list[_Series]) -> Pending | None:
    """One batch in the series form only (what an agent sends in its steady state), laid out by
    its shape; C calls per series, no Python per point. None: the general fast path decides."""
    points = list(map(_POINTS, series))
    counts = list(map(len, points))
    if not all(counts) or sum(counts) > MAX_SAMPLES_PER_BATCH:
        return None
    shape = _shape(agent.id, series)
    if shape is None:
        return None
    stamps, newest, latest = _newest_points(points)
    values: list[float] = list(map(_by_value, latest))
    if str in set(map(type, values)):
        values = list(map(_number, values))
    batch = envelope.batches[0]
    row = BatchRow.make(batch, batch.samples, batch.series, sum(counts), min(map(min, stamps)), max(newest))
    columns = Columns(shape, newest, values, points)
    return Pending(
        agent, envelope.site, envelope.position, envelope.sent_ms, [None], [(0, row)], None, columns
    )
