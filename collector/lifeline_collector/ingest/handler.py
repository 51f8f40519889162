"""``POST /api/v1/ingest``: authenticate, bound, decode, validate per batch, store once, answer per item.

The hot path: a fast decode that keeps each batch's samples as the JSON bytes sent (the store
keeps them as one blob) and works out the newest sample of every series in C loops (per series
in the wire's series form: its name and labels come once, its points decode in C); requests
that arrive together are committed together (``GroupCommit``), and each is answered only after
its commit.

Status codes: 200 with one result per batch (accepted | duplicate | rejected, with a reason that
names the field); 400 a body that is not JSON; 401 missing or wrong token (one generic answer);
403 a batch of another agent; 408 a body not received within ``server.body_timeout``; 413 body
over ``server.max_body_bytes``; 422 JSON that breaks the contract (the field is named); 503 the
store is busy — retry. Nothing an agent sends answers 500: a request that makes the store's code
raise is refused alone (422), the others of its group commit are stored as if it were not there.

What one agent may put into the collector is bounded (``[limits]``): a batch that would take the
agent over ``max_series_per_agent`` series, or whose events break the event limits, is rejected
(per batch, naming the limit). Every refusal is counted per agent and reason on /metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import and_, attrgetter, eq, ge, getitem, gt, itemgetter, not_, or_
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from lifeline_collector.clock import Clock
from lifeline_collector.errors import StoreError
from lifeline_collector.fleet import STREAK_METRICS, AgentView, Fleet, SeriesKey, SeriesState, Slots
from lifeline_collector.http import bearer_token, error_response, header, read_body, unauthorized
from lifeline_collector.limits import LimitsSection
from lifeline_collector.stats import Stats
from lifeline_collector.store import AgentRow, BatchRow, LatestState, SeqTotals, Store, labels_key
from lifeline_wire.catalog import CATALOG
from lifeline_wire.catalog import collector as collector_catalog
from lifeline_wire.schema import (
    MAX_BATCHES_PER_ENVELOPE,
    MAX_EVENTS_PER_BATCH,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_SAMPLES_PER_BATCH,
    NON_FINITE,
    NON_FINITE_METRICS,
    SUPPORTED_VERSIONS,
    Batch,
    Envelope,
    Event,
    Identifier,
    IngestResponse,
    ItemResult,
    ItemStatus,
    NonFinite,
    Sample,
    SequenceNumber,
    SeriesPoints,
    TimestampMs,
    WireError,
    decode_envelope,
    encode,
    unsafe_char,
)
from lifeline_wire.schema import Point as WirePoint

log = logging.getLogger("lifeline_collector.ingest")

COLLECTOR_ONLY = frozenset(spec.name for spec in collector_catalog.METRICS)
_SYNTAX_REASONS = ("JSON is malformed", "Input data was truncated")
_by_time = itemgetter(0)
_by_value = itemgetter(1)
NEVER = -1  # older than any timestamp: a series not seen yet


# What an agent may send: metric name → the labels it may carry (collector-only metrics left out).
_ADMISSIBLE = {name: frozenset(spec.labels) for name, spec in CATALOG.items() if name not in COLLECTOR_ONLY}


DEFAULT_LIMITS = LimitsSection()


def limits_problem(index: int, events: Sequence[Event], limits: LimitsSection) -> tuple[str, str] | None:
    """(reason, text) when a batch's events break a ``[limits]`` key, or None."""
    if len(events) > limits.max_events_per_batch:
        return "events", (
            f"$.batches[{index}].events: {len(events)} events, over limits.max_events_per_batch"
            f" ({limits.max_events_per_batch})"
        )
    longest = limits.max_event_attribute_length
    for number, event in enumerate(events):
        attributes = event.attributes
        if len(attributes) > limits.max_event_attributes:
            return "event_attributes", (
                f"$.batches[{index}].events[{number}].attributes: {len(attributes)} attributes, over"
                f" limits.max_event_attributes ({limits.max_event_attributes})"
            )
        for name, value in attributes.items():
            if isinstance(value, str) and len(value) > longest:
                return "event_attributes", (
                    f"$.batches[{index}].events[{number}].attributes.{name}: {len(value)} characters,"
                    f" over limits.max_event_attribute_length ({longest})"
                )
    return None


def check_batch(index: int, batch: Batch) -> str | None:
    """Why a decoded batch breaks the catalog (unknown metric, undeclared label), or None."""
    admissible = _ADMISSIBLE
    for item in chain[Sample | SeriesPoints](batch.samples, batch.series):  # one lookup, one test each
        allowed = admissible.get(item.name)
        if allowed is None or not item.labels.keys() <= allowed:
            break
    else:
        return None
    # Something is wrong: name the first culprit.
    places = [("samples", number, item.name, item.labels) for number, item in enumerate(batch.samples)]
    places += [("series", number, item.name, item.labels) for number, item in enumerate(batch.series)]
    for form, number, name, labels in places:
        path = f"$.batches[{index}].{form}[{number}]"
        spec = CATALOG.get(name)
        if spec is None:
            return f"{path}.name: unknown metric {name!r} (not in the catalog)"
        if name in COLLECTOR_ONLY:
            return f"{path}.name: {name} is exposed by the collector itself; agents may not send it"
        for label in labels:
            if label not in spec.labels:
                declared = ", ".join(spec.labels) or "none"
                return f"{path}.labels.{label}: not a label of {name} (allowed: {declared})"
    return None


# --- the fast decode ---------------------------------------------------------------------------
# The same JSON as ``lifeline_wire.decode_envelope`` with the same limits, decoded in two steps: a
# batch's samples stay raw bytes (they are stored as sent), then become untracked structs whose
# labels stay raw too. Each distinct (name, labels) text is parsed and checked against the
# catalog once (``_series_info``), not once per sample. Anything unusual (an unknown metric, an
# odd label, another agent's batch, a version) returns None and the strict decoder takes over, so
# errors keep their exact wording and field path.


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
_KEY_NAME, _KEY_LABELS = itemgetter(0), itemgetter(1)  # of a SeriesKey
_STREAK = attrgetter("zero_streak")

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
    admissible = _ADMISSIBLE.get(name)
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


@dataclass(slots=True)
class Candidate:
    """A series' newest sample in one request; all its points in time order when that one is 0."""

    labels: dict[str, str]
    ts_ms: int
    value: float
    # Needed only to count a streak of zeros; values as floats or as the wire spells them ("NaN").
    points: Sequence[tuple[int, float | str]] | None


@dataclass(slots=True)
class Shape:
    """The series of an agent's batch in the order it lists them, checked against the catalog once:
    while the agent keeps sending the same series (its steady state) every batch reuses it."""

    names: list[str]
    labels_raw: list[msgspec.Raw]  # as sent
    keys: list[SeriesKey]
    labels: list[dict[str, str]]
    streaks: list[bool]  # whose zero streak is counted (``STREAK_METRICS``)

    def rows(self, states: list[SeriesState | None]) -> list[LatestState]:
        """The stored rows of ``states`` laid out in this shape (none of them None)."""
        return list(
            zip(
                map(_KEY_NAME, self.keys),
                map(_KEY_LABELS, self.keys),
                map(_VALUE, states),
                map(_TS, states),
                map(_STREAK, states),
                strict=True,
            )
        )


@dataclass(slots=True)
class Columns:
    """A batch in the series form only, laid out by its shape: each series' newest point (the first
    sent among equal times) and all its points, for the few series whose streak needs them."""

    shape: Shape
    ts: list[int]
    values: list[float]
    points: list[list[WirePoint]]

    def candidates(self) -> dict[SeriesKey, Candidate]:
        shape = self.shape
        out: dict[SeriesKey, Candidate] = {}
        for key, labels, ts_ms, value, points, streak in zip(
            shape.keys, shape.labels, self.ts, self.values, self.points, shape.streaks, strict=True
        ):
            timeline = sorted(points, key=_by_time) if streak and value == 0 else None
            out[key] = Candidate(labels, ts_ms, value, timeline)
        return out


@dataclass(slots=True)
class Pending:
    """One decoded and checked request, waiting for its commit."""

    agent: AgentRow
    site: str
    position: str
    sent_ms: int
    results: list[ItemResult | None]  # rejected batches are answered already
    batches: list[tuple[int, BatchRow]]  # (index in the envelope, row) of the valid batches
    grouped: dict[SeriesKey, Candidate] | None  # each series' newest sample, or ``columns``
    columns: Columns | None = None  # one batch in the series form (the steady state)
    refusals: list[str] = field(default_factory=list)  # why batches were rejected (counted per agent)

    @property
    def candidates(self) -> dict[SeriesKey, Candidate]:
        """Each series' newest sample in this request."""
        if self.grouped is None:
            assert self.columns is not None
            self.grouped = self.columns.candidates()
        return self.grouped


@dataclass(frozen=True, slots=True)
class Stored:
    """What one request added: the agent's updated view and the (boot, seq) of the new batches."""

    agent: AgentView
    new_batches: tuple[tuple[str, int], ...]


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


def plan_columns(
    columns: Columns, current: list[SeriesState | None], horizon: int | None = None
) -> list[SeriesState | None]:
    """``plan`` for every series of a steady batch at once (``current`` laid out by its shape): a
    series newer than known takes its newest value; only a series older than known (backfill) or
    whose streak of zeros counts goes through ``plan`` on its own. A series whose newest point lies
    beyond ``horizon`` does not move (see ``plan``)."""
    shape = columns.shape
    states: list[SeriesState | None] = list(
        map(SeriesState, shape.labels, columns.values, columns.ts, repeat(0))
    )
    known = [NEVER if state is None else state.ts_ms for state in current]
    newer = list(map(gt, columns.ts, known))
    if horizon is not None and columns.ts and max(columns.ts) > horizon:
        newer = list(map(and_, newer, map(ge, repeat(horizon), columns.ts)))
    walks = map(and_, shape.streaks, map(eq, columns.values, repeat(0)))
    for at in compress(range(len(states)), map(or_, map(not_, newer), walks)):
        if not newer[at]:
            states[at] = None  # backfill is stored, but does not move "latest"
        else:
            timeline = sorted(columns.points[at], key=_by_time)
            candidate = Candidate(shape.labels[at], columns.ts[at], columns.values[at], timeline)
            states[at] = plan(candidate, current[at], horizon)
    return states


def prepare(agent: AgentRow, envelope: Envelope, limits: LimitsSection = DEFAULT_LIMITS) -> Pending:
    """A strictly decoded request, checked against the catalog and the limits batch by batch."""
    results: list[ItemResult | None] = [None] * len(envelope.batches)
    rows: list[tuple[int, BatchRow]] = []
    points: dict[SeriesKey, list[tuple[int, float, dict[str, str]]]] = {}
    refusals: list[str] = []
    for index, batch in enumerate(envelope.batches):
        reason, code = check_batch(index, batch), "catalog"
        if reason is None:
            code, reason = limits_problem(index, batch.events, limits) or (code, None)
        if reason is not None:
            results[index] = ItemResult(batch.boot_id, batch.seq, "rejected", reason)
            refusals.append(code)
            continue
        rows.append((index, BatchRow.of(batch)))
        for sample in batch.every_sample():
            key = (sample.name, labels_key(sample.labels))
            points.setdefault(key, []).append((sample.ts_ms, sample.number, sample.labels))
    candidates: dict[SeriesKey, Candidate] = {}
    for key, series in points.items():
        series.sort(key=_by_time)  # stable: equal times keep the order sent
        newest = series[-1][0]
        ts_ms, value, labels = next(point for point in series if point[0] == newest)
        timeline = [(t, v) for t, v, _ in series] if value == 0 and key[0] in STREAK_METRICS else None
        candidates[key] = Candidate(labels, ts_ms, value, timeline)
    return Pending(
        agent,
        envelope.site,
        envelope.position,
        envelope.sent_ms,
        results,
        rows,
        candidates,
        refusals=refusals,
    )


def plan(candidate: Candidate, current: SeriesState | None, horizon: int | None = None) -> SeriesState | None:
    """The series' new state, or None if the request moves nothing (backfill is stored, but only
    newer samples move "latest"; they apply in time order so the zero streak counts rounds).

    A sample timed after ``horizon`` (the collector's clock plus ``limits.max_clock_ahead``) is
    stored but moves nothing: "latest" follows the agent's timestamps, and one from a clock that
    jumped ahead would otherwise stay newest — every later report mere backfill, the position's
    alerting frozen — until real time caught up with it."""
    if horizon is not None and candidate.ts_ms > horizon:
        return None
    if current is not None and candidate.ts_ms <= current.ts_ms:
        return None
    if candidate.points is None:  # the newest value is not 0: no streak to count
        labels = dict(candidate.labels) if current is None else current.labels
        return SeriesState(labels, candidate.value, candidate.ts_ms, 0)
    # The points end at the candidate (the newest, 0), so only the streak needs the walk (a few
    # points a series: a plain loop is cheaper here than C calls with their set-up).
    points = iter(candidate.points)
    if current is None:  # the first point starts the series
        ts_ms, first = next(points)
        labels, streak = dict(candidate.labels), 1 if first == 0 else 0
    else:
        labels, ts_ms, streak = current.labels, current.ts_ms, current.zero_streak
    for at, number in points:
        if at > ts_ms:
            streak = streak + 1 if number == 0 else 0  # "NaN" and "+Inf" are not 0
            ts_ms = at
    return SeriesState(labels, candidate.value, candidate.ts_ms, streak)


class Ingestor:
    def __init__(
        self, store: Store, fleet: Fleet, stats: Stats, clock: Clock, limits: LimitsSection = DEFAULT_LIMITS
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.stats = stats
        self.clock = clock
        self.limits = limits
        # Called after commit with what was stored (remote-write hooks in here).
        self.on_stored: list[Callable[[Stored], None]] = []

    def ingest(self, agent: AgentRow, envelope: Envelope) -> tuple[IngestResponse, Stored]:
        """One strictly decoded request in its own transaction (tests, tools)."""
        return self.commit([prepare(agent, envelope)])[0]

    def commit(self, requests: Sequence[Pending]) -> list[tuple[IngestResponse, Stored]]:
        """Store ``requests`` in one transaction, then update the fleet view; answers in order.

        Each request sees the ones before it (two from one agent in the same commit chain like
        two commits). Nothing reaches the fleet view or the hooks unless the commit succeeded.
        """
        now = self.clock.now()
        now_ms = int(now * 1000)
        horizon = now_ms + round(self.limits.max_clock_ahead * 1000)
        staged: dict[str, dict[SeriesKey, SeriesState]] = {}
        # Agents whose one steady batch in this commit is planned by its shape (``plan_columns``).
        laid_out: dict[str, tuple[Slots, list[SeriesState | None], list[SeriesState | None]]] = {}
        alone = Counter(request.agent.id for request in requests)
        done: list[tuple[Pending, dict[SeriesKey, SeriesState], SeqTotals, list[tuple[str, int]], list[str]]]
        done = []
        with self.store.writer() as writer:
            for request in requests:
                agent = request.agent.id
                new: list[tuple[str, int]] = []
                refused = self._over_series_limit(request, staged.get(agent, {}))
                if refused:
                    writer.touch_agent(
                        agent,
                        site=request.site,
                        position=request.position,
                        seen_ms=now_ms,
                        clock_offset_ms=request.sent_ms - now_ms,
                    )
                    done.append((request, {}, writer.seq_totals(agent), new, refused))
                    continue
                for index, row in request.batches:
                    batch_id = writer.insert_batch(agent, row, now_ms)
                    status: ItemStatus = "duplicate" if batch_id is None else "accepted"
                    request.results[index] = ItemResult(row.boot_id, row.seq, status)
                    if batch_id is not None:
                        new.append((row.boot_id, row.seq))
                        if row.events:
                            writer.insert_events(agent, batch_id, row.events)
                updates: dict[SeriesKey, SeriesState] = {}
                columns = request.columns
                laid = None
                if new and columns is not None and alone[agent] == 1:
                    slots = self.fleet.slots(agent, columns.shape.keys)
                    planned = plan_columns(columns, slots.states, horizon)
                    now_states = [
                        state if state is not None else kept
                        for state, kept in zip(planned, slots.states, strict=True)
                    ]
                    # A series never seen whose only points lie beyond the horizon has no state to
                    # lay out: the general path below plans such a batch.
                    if None not in now_states:
                        laid = laid_out[agent] = (slots, planned, now_states)
                        writer.set_agent_latest(agent, slots.others + columns.shape.rows(now_states))
                if new and laid is None:
                    view = self.fleet.agents.get(agent)
                    known = view.series if view is not None else {}
                    mine = staged.setdefault(agent, {})
                    for key, candidate in request.candidates.items():
                        current = mine.get(key)
                        if current is None:
                            current = known.get(key[0], {}).get(key[1])
                        state = plan(candidate, current, horizon)
                        if state is not None:
                            updates[key] = state
                    mine.update(updates)
                writer.touch_agent(
                    agent,
                    site=request.site,
                    position=request.position,
                    seen_ms=now_ms,
                    clock_offset_ms=request.sent_ms - now_ms,
                )
                done.append((request, updates, writer.seq_totals(agent), new, []))
            # Each agent's whole series state, one row per agent (not one per series).
            for agent, mine in staged.items():
                if mine:
                    view = self.fleet.agents.get(agent)
                    states = [
                        (name, key, state.value, state.ts_ms, state.zero_streak)
                        for name, series in (view.series.items() if view is not None else ())
                        for key, state in series.items()
                        if (name, key) not in mine
                    ]
                    states += [
                        (name, key, state.value, state.ts_ms, state.zero_streak)
                        for (name, key), state in mine.items()
                    ]
                    writer.set_agent_latest(agent, states)
        out: list[tuple[IngestResponse, Stored]] = []
        for request, updates, seq, new, refused in done:
            view = self.fleet.apply(
                request.agent,
                updates,
                site=request.site,
                position=request.position,
                seen=now,
                clock_offset=(request.sent_ms - now_ms) / 1000,
                seq=seq,
            )
            if request.agent.id in laid_out:
                self.fleet.set_slots(view, *laid_out[request.agent.id])
            answered = [result for result in request.results if result is not None]
            for code in request.refusals + refused:
                self.stats.reject(request.agent.id, code)
            for result in answered:
                self.stats.batch(result.status)
                if result.status == "rejected":
                    log.warning(
                        "agent %s: batch %s/%d rejected: %s",
                        request.agent.id,
                        result.boot_id,
                        result.seq,
                        result.reason,
                    )
            stored = Stored(view, tuple(new))
            for hook in self.on_stored:
                try:
                    hook(stored)
                except Exception:  # stored and about to be answered: a hook's bug must not undo that
                    log.exception("a hook after the commit of %s failed", request.agent.id)
            out.append((IngestResponse(results=answered, server_ms=now_ms), stored))
        return out

    def _over_series_limit(self, request: Pending, staged: dict[SeriesKey, SeriesState]) -> list[str]:
        """Reject every batch of ``request`` (and say so) if it would take its agent over
        ``limits.max_series_per_agent``; the agent's known series are kept and updated as before."""
        limit = self.limits.max_series_per_agent
        view = self.fleet.agents.get(request.agent.id)
        known = view.series if view is not None else {}
        keys: Sequence[SeriesKey] = (
            request.columns.shape.keys if request.columns is not None else list(request.candidates)
        )
        have = sum(map(len, known.values()))
        if have + len(staged) + len(keys) <= limit:  # the common case: far from the limit
            return []
        added = {key for key in staged if key[1] not in known.get(key[0], {})}
        added.update(key for key in keys if key[1] not in known.get(key[0], {}))
        total = have + len(added)
        if total <= limit:
            return []
        reason = (
            f"$.batches: would make {total} series for agent {request.agent.id}, over"
            f" limits.max_series_per_agent ({limit}); no new series are taken from it"
        )
        for index, row in request.batches:
            request.results[index] = ItemResult(row.boot_id, row.seq, "rejected", reason)
        return ["series_limit"] * len(request.batches)


class GroupCommit:
    """Commits the requests that reach it in one event-loop pass in one transaction.

    A request waits for the commit that holds it, so no answer acknowledges unstored data;
    ``after`` (alert evaluation) runs right after each commit, before the answers go out.
    """

    def __init__(self, ingestor: Ingestor, after: Callable[[list[Stored]], object]) -> None:
        self.ingestor = ingestor
        self.after = after
        self._waiting: list[tuple[Pending, asyncio.Future[IngestResponse]]] = []
        self.commits = 0  # commits made, and requests in them: the mean group size
        self.requests = 0

    async def submit(self, request: Pending) -> IngestResponse:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[IngestResponse] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((request, answer))
        return await answer

    def _flush(self) -> None:
        group, self._waiting = self._waiting, []
        try:
            outcomes = self._commit([request for request, _ in group])
            try:
                self.after([outcome[1] for outcome in outcomes if not isinstance(outcome, Exception)])
            except Exception:  # the data is committed: answer it; the engine isolates its own faults
                log.exception("alert evaluation after a commit failed")
            for (_, answer), outcome in zip(group, outcomes, strict=True):
                if answer.done():
                    continue
                if isinstance(outcome, Exception):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome[0])
        finally:  # a bug must not leave requests waiting for ever
            for _, answer in group:
                if not answer.done():
                    answer.cancel()

    def _commit(self, requests: list[Pending]) -> list[tuple[IngestResponse, Stored] | Exception]:
        """The group in one transaction; if that fails, each request in its own, so one agent's
        request that cannot be stored fails alone and the others are stored as if it were not there."""
        try:
            outcomes: list[tuple[IngestResponse, Stored] | Exception] = list(self.ingestor.commit(requests))
        except Exception as exc:  # the transaction rolled back: nothing of the group is stored
            if len(requests) == 1:
                return [exc]
            log.warning(
                "a group commit of %d requests failed (%s): storing them one by one", len(requests), exc
            )
        else:
            self.commits += 1
            self.requests += len(requests)
            return outcomes
        outcomes = []
        for request in requests:
            try:
                outcomes.append(self.ingestor.commit([request])[0])
            except Exception as exc:  # this request alone: answered with its error
                outcomes.append(exc)
            else:
                self.commits += 1
                self.requests += 1
        return outcomes


async def handle(
    request: Request,
    store: Store,
    limit: int,
    commit: Callable[[Pending], Awaitable[IngestResponse]],
    *,
    limits: LimitsSection = DEFAULT_LIMITS,
    stats: Stats | None = None,
    body_timeout: float | None = None,
) -> Response:
    agent = store.agent_for_token(bearer_token(header(request, b"authorization")))
    if agent is None:
        return unauthorized()
    refused = stats.reject if stats is not None else _not_counted
    try:
        async with asyncio.timeout(body_timeout):
            body = await read_body(request, limit)
    except TimeoutError:
        refused(agent.id, "slow_body")
        return error_response(408, f"body not received within {body_timeout:g} s")
    if body is None:
        refused(agent.id, "too_large")
        return error_response(413, f"body larger than {limit} bytes: split the batches")
    pending = prepare_fast(agent, body, limits)
    if pending is None:  # something is unusual: the strict decoder says what, or takes it
        try:
            envelope = decode_envelope(body)
        except WireError as exc:
            status = 400 if exc.reason.startswith(_SYNTAX_REASONS) else 422
            refused(agent.id, exc.kind)
            return error_response(status, exc.reason, exc.path)
        if envelope.batches[0].agent_id != agent.id:
            refused(agent.id, "wrong_agent")
            return error_response(
                403, "batches belong to another agent than the token's", "$.batches[0].agent_id"
            )
        pending = prepare(agent, envelope, limits)
    try:
        answer = await commit(pending)
    except StoreError as exc:
        log.error("ingest from %s failed: %s", agent.id, exc)
        return error_response(503, "store unavailable, retry later", headers={"Retry-After": "1"})
    except Exception:  # nothing was stored; the others of its group commit were
        log.exception("ingest from %s could not be stored", agent.id)
        refused(agent.id, "unstorable")
        return error_response(422, "the collector could not store this request (its log says why)", "$")
    return Response(encode(answer), media_type="application/json")


def _not_counted(agent: str, reason: str) -> None:
    """Where no stats are kept (tools and tests that call ``handle`` alone)."""
