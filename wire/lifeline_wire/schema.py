"""Wire contract v2: the batch an agent sends and the per-item answer the collector gives.

A batch is identified by (agent_id, boot_id, seq). ``seq`` only grows within one boot of the
agent, so the collector can store each batch exactly once however often it is retried, and a
gap in ``seq`` is visible as lost data. Timestamps are Unix milliseconds and are the time the
measurement was taken, never the time it was sent.

Decoding is strict: unknown fields, wrong types and out-of-range values are rejected, and every
error names the field as a JSON path (``$.batches[0].samples[3].value``). Beyond the types,
``decode_envelope`` checks what a type cannot say: a value is finite unless its metric declares
otherwise (``MetricSpec.non_finite``: "+Inf" means "never" for a handshake age), and label values,
event attribute strings, site and position carry no control characters and no bidirectional
overrides (``unsafe_char``), so no output — /metrics, an alert sentence, a page — can be spoofed
or broken by what an agent wrote. JSON nested deeper than the contract ever needs is refused.

A batch carries its measurements in either of two forms, or both: ``samples`` (one object per
sample, version 1) and ``series`` (version 2: one entry per series with its ``[ts_ms, value]``
points, so the name and labels travel once per series, not once per sample). Both forms keep every
sample's own timestamp and value; ``Batch.every_sample()`` reads a batch the same way whatever the
form. A collector speaks both versions; an older collector refuses version 2, so collectors are
upgraded before agents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgspec

from lifeline_wire.catalog import CATALOG

SCHEMA_VERSION: Final = 2
SUPPORTED_VERSIONS: Final = frozenset({1, 2})  # version 1 has no ``series``; its batches stay valid

MAX_BATCHES_PER_ENVELOPE: Final = 500
MAX_SAMPLES_PER_BATCH: Final = 20_000  # samples and series points together
MAX_EVENTS_PER_BATCH: Final = 2_000
MAX_LABELS: Final = 16
MAX_LABEL_VALUE: Final = 256
MAX_EVENT_ATTRIBUTES: Final = 64
MAX_EVENT_ATTRIBUTE_LENGTH: Final = 1024
# Below 2**63 (SQLite's INTEGER) with room to spare, and exact as a float in every JSON reader.
MAX_SEQ: Final = 2**53

METRIC_NAME_RE: Final = r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$"
LABEL_NAME_RE: Final = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"
ID_RE: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

MetricName = Annotated[str, msgspec.Meta(pattern=METRIC_NAME_RE)]
LabelName = Annotated[str, msgspec.Meta(pattern=LABEL_NAME_RE)]
LabelValue = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE)]
Identifier = Annotated[str, msgspec.Meta(pattern=ID_RE)]
# Milliseconds since the Unix epoch: 2001-09-09 .. 2286-11-20, which rejects seconds sent by mistake.
TimestampMs = Annotated[int, msgspec.Meta(ge=1_000_000_000_000, lt=10_000_000_000_000)]
# Integers within 64 bits: what every store and JSON reader downstream can hold.
EventAttr = (
    Annotated[str, msgspec.Meta(max_length=MAX_EVENT_ATTRIBUTE_LENGTH)]
    | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | float
    | bool
)
NonFinite = Literal["+Inf", "-Inf", "NaN"]
NON_FINITE: Final = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}  # the wire's spellings
# The metrics whose values may be NaN or ±Inf; every other value must be finite.
NON_FINITE_METRICS: Final = frozenset(name for name, spec in CATALOG.items() if spec.non_finite)
SequenceNumber = Annotated[int, msgspec.Meta(ge=0, lt=MAX_SEQ)]
# Characters no label value, attribute or name may carry: C0 and C1 controls (NUL, newline, ESC …),
# DEL, line and paragraph separators, and the bidirectional marks, embeddings, overrides and
# isolates that make text read other than it is stored (U+202E turns "gnp.exe" into "exe.png").
_UNSAFE_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# Sample names and label names are checked in ``Sample.__post_init__`` against the patterns above,
# remembering the names that passed: a collector decodes ~340 samples per batch, thousands of
# batches a second, drawn from a few dozen names, and a regex per name and label was most of the
# decode time. The schema (OpenAPI) still states the patterns.
_METRIC_NAME: Final = re.compile(METRIC_NAME_RE)
_LABEL_NAME: Final = re.compile(LABEL_NAME_RE)
# Only names the catalog declares are remembered: names a rejected request made up must not fill
# the sets (memory, and the room real names need).
_KNOWN_GOOD_LIMIT: Final = 10_000
_DECLARED_LABELS: Final = frozenset(label for spec in CATALOG.values() for label in spec.labels)
_good_metric_names: set[str] = set()
_good_label_names: set[str] = set()
# A __post_init__ error names its field after this marker; ``_wire_error`` moves it into the path.
_FIELD_MARK: Final = "@field "


def _check_name(name: str) -> None:
    if _METRIC_NAME.match(name) is None:
        raise ValueError(f"{_FIELD_MARK}name: Expected `str` matching regex {METRIC_NAME_RE!r}")
    if name in CATALOG and len(_good_metric_names) < _KNOWN_GOOD_LIMIT:
        _good_metric_names.add(name)


def _check_label_names(labels: dict[str, str]) -> None:
    for label in labels:
        if label not in _good_label_names:
            if _LABEL_NAME.match(label) is None:
                raise ValueError(
                    f"{_FIELD_MARK}labels: label name {label!r} does not match {LABEL_NAME_RE!r}"
                )
            if label in _DECLARED_LABELS and len(_good_label_names) < _KNOWN_GOOD_LIMIT:
                _good_label_names.add(label)


class WireError(ValueError):
    """A body that does not follow the contract. ``path`` is the JSON path of the bad field;
    ``kind`` sorts it for counting: schema, non_finite, unsafe_text or too_deep."""

    def __init__(self, path: str, reason: str, kind: str = "schema") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.kind = kind


class Sample(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=False):
    """One measured value of one series at the time it was measured."""

    name: Annotated[str, msgspec.Meta(extra_json_schema={"pattern": METRIC_NAME_RE})]
    # JSON has no infinity, so non-finite values travel as Prometheus spells them ("+Inf", "NaN").
    value: float | NonFinite
    ts_ms: TimestampMs
    labels: Annotated[
        dict[str, LabelValue],
        msgspec.Meta(max_length=MAX_LABELS, extra_json_schema={"propertyNames": {"pattern": LABEL_NAME_RE}}),
    ] = {}

    def __post_init__(self) -> None:
        if self.name not in _good_metric_names:
            _check_name(self.name)
        if self.labels and not _good_label_names.issuperset(self.labels):
            _check_label_names(self.labels)
        if isinstance(self.value, float) and not math.isfinite(self.value):
            msgspec.structs.force_setattr(self, "value", _spelled(self.value))

    @property
    def number(self) -> float:
        """The value as a float, whatever its spelling on the wire."""
        return NON_FINITE[self.value] if isinstance(self.value, str) else float(self.value)


# One point of a series: ``[ts_ms, value]`` (an array, so msgspec decodes it in C).
Point = tuple[TimestampMs, float | NonFinite]


def _spelled(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


class SeriesPoints(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The samples of one series in one batch: its name and labels once, then every point."""

    name: Annotated[str, msgspec.Meta(extra_json_schema={"pattern": METRIC_NAME_RE})]
    labels: Annotated[
        dict[str, LabelValue],
        msgspec.Meta(max_length=MAX_LABELS, extra_json_schema={"propertyNames": {"pattern": LABEL_NAME_RE}}),
    ] = {}
    points: Annotated[list[Point], msgspec.Meta(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)] = []

    def __post_init__(self) -> None:
        if self.name not in _good_metric_names:
            _check_name(self.name)
        if self.labels and not _good_label_names.issuperset(self.labels):
            _check_label_names(self.labels)
        if not self.points:  # decoding enforces min_length; this catches a struct built in code
            raise ValueError(f"{_FIELD_MARK}points: a series needs at least one point")
        for _, value in self.points:
            if isinstance(value, float) and not math.isfinite(value):
                spelled = [
                    (t, _spelled(v) if isinstance(v, float) and not math.isfinite(v) else v)
                    for t, v in self.points
                ]
                msgspec.structs.force_setattr(self, "points", spelled)
                break

    def samples(self) -> list[Sample]:
        """The points as samples, in the order sent (they share one labels dict: do not mutate)."""
        name, labels = self.name, self.labels
        return [Sample(name, value, ts_ms, labels) for ts_ms, value in self.points]


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Something that happened at one moment: a link change, a layer state change, a failover."""

    type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
    ts_ms: TimestampMs
    attributes: Annotated[dict[LabelName, EventAttr], msgspec.Meta(max_length=MAX_EVENT_ATTRIBUTES)] = {}


class Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the agent measured in one interval, spooled and sent as one unit."""

    agent_id: Identifier
    boot_id: Identifier
    seq: SequenceNumber
    created_ms: TimestampMs
    samples: Annotated[list[Sample], msgspec.Meta(max_length=MAX_SAMPLES_PER_BATCH)] = []
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS_PER_BATCH)] = []
    # True for batches that carry a state change: sent ahead of any backlog.
    priority: bool = False
    # Version 2: the same kind of measurements grouped by series (see the module docstring).
    series: Annotated[list[SeriesPoints], msgspec.Meta(max_length=MAX_SAMPLES_PER_BATCH)] = []

    def __post_init__(self) -> None:
        if self.series:
            count = self.sample_count()
            if count > MAX_SAMPLES_PER_BATCH:
                raise ValueError(
                    f"{_FIELD_MARK}series: at most {MAX_SAMPLES_PER_BATCH} samples per batch"
                    f" (samples and series points together), got {count}"
                )

    def sample_count(self) -> int:
        """How many samples the batch carries, in both forms."""
        return len(self.samples) + sum(len(entry.points) for entry in self.series)

    def every_sample(self) -> list[Sample]:
        """Every sample of the batch in its canonical order (see :func:`every_sample`)."""
        return every_sample(self.samples, self.series)


def every_sample(samples: list[Sample], series: Sequence[SeriesPoints]) -> list[Sample]:
    """A batch's samples in their canonical order: ``samples`` as sent, then each series' points,
    series by series (the order the collector numbers them in, and stores them back in)."""
    if not series:
        return samples
    out = list(samples)
    for entry in series:
        out += entry.samples()
    return out


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/ingest``: one or more batches from one agent."""

    version: int
    batches: Annotated[list[Batch], msgspec.Meta(min_length=1, max_length=MAX_BATCHES_PER_ENVELOPE)]
    # The agent's clock when it sent the envelope, for the collector's clock-offset estimate.
    sent_ms: TimestampMs
    site: Annotated[str, msgspec.Meta(max_length=64)] = ""
    position: Annotated[str, msgspec.Meta(max_length=64)] = ""


ItemStatus = Literal["accepted", "duplicate", "rejected"]


class ItemResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The collector's answer for one batch. ``accepted`` and ``duplicate`` may both be deleted."""

    boot_id: str
    seq: int
    status: ItemStatus
    reason: str = ""


class IngestResponse(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    results: list[ItemResult]
    server_ms: int = 0


class _VersionOnly(msgspec.Struct):
    version: int = SCHEMA_VERSION


_envelope_decoder: Final = msgspec.json.Decoder(Envelope)
_response_decoder: Final = msgspec.json.Decoder(IngestResponse)
_version_decoder: Final = msgspec.json.Decoder(_VersionOnly)
_encoder: Final = msgspec.json.Encoder()
_PATH_RE: Final = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]+)`)?$", re.DOTALL)


def _wire_error(exc: msgspec.DecodeError) -> WireError:
    match = _PATH_RE.match(str(exc))
    if match is None:  # pragma: no cover - the regex matches every string
        return WireError("$", str(exc))
    path, reason = match.group("path") or "$", match.group("reason")
    if reason.startswith(_FIELD_MARK):  # raised by a __post_init__: it named the field
        field, _, reason = reason.removeprefix(_FIELD_MARK).partition(": ")
        path = f"{path}.{field}"
    return WireError(path, reason)


def decode_envelope(body: bytes) -> Envelope:
    """Decode and validate an ingest body, or raise WireError naming the bad field."""
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.DecodeError as exc:
        try:
            version = _version_decoder.decode(body).version
        except (msgspec.DecodeError, RecursionError):
            version = SCHEMA_VERSION
        if version not in SUPPORTED_VERSIONS:
            raise _version_error(version) from None
        raise _wire_error(exc) from None
    except RecursionError:
        raise WireError("$", TOO_DEEP, "too_deep") from None
    if envelope.version not in SUPPORTED_VERSIONS:
        raise _version_error(envelope.version)
    first = envelope.batches[0].agent_id
    for index, batch in enumerate(envelope.batches):
        if batch.agent_id != first:
            raise WireError(f"$.batches[{index}].agent_id", "all batches must come from one agent")
    problem = envelope_problem(envelope)
    if problem is not None:
        raise problem
    return envelope


TOO_DEEP: Final = "JSON nested deeper than the contract allows"


def unsafe_char(text: str) -> str | None:
    """Why ``text`` may not travel (a control character or a bidirectional override), or None."""
    found = _UNSAFE_CHARS.search(text)
    if found is None:
        return None
    return f"must not contain control or bidirectional-override characters (U+{ord(found.group()):04X})"


def envelope_problem(envelope: Envelope) -> WireError | None:
    """What the types cannot check (see the module docstring): the first offending field, or None."""
    for key in ("site", "position"):
        reason = unsafe_char(getattr(envelope, key))
        if reason is not None:
            return WireError(f"$.{key}", reason, "unsafe_text")
    for index, batch in enumerate(envelope.batches):
        where = f"$.batches[{index}]"
        for number, sample in enumerate(batch.samples):
            if isinstance(sample.value, str) and sample.name not in NON_FINITE_METRICS:
                path = f"{where}.samples[{number}].value"
                return WireError(path, _finite(sample.name, sample.value), "non_finite")
            problem = _labels_problem(f"{where}.samples[{number}].labels", sample.labels)
            if problem is not None:
                return problem
        for number, entry in enumerate(batch.series):
            if entry.name not in NON_FINITE_METRICS:
                for at, (_, value) in enumerate(entry.points):
                    if isinstance(value, str):
                        path = f"{where}.series[{number}].points[{at}][1]"
                        return WireError(path, _finite(entry.name, value), "non_finite")
            problem = _labels_problem(f"{where}.series[{number}].labels", entry.labels)
            if problem is not None:
                return problem
        for number, event in enumerate(batch.events):
            for name, attribute in event.attributes.items():
                path = f"{where}.events[{number}].attributes.{name}"
                if isinstance(attribute, float) and not math.isfinite(attribute):
                    return WireError(path, "must be a finite number", "non_finite")
                reason = unsafe_char(attribute) if isinstance(attribute, str) else None
                if reason is not None:
                    return WireError(path, reason, "unsafe_text")
    return None


def _finite(name: str, value: str) -> str:
    return (
        f"must be a finite number: {name} is not one of the metrics that may be NaN or ±Inf (got {value!r})"
    )


def _labels_problem(path: str, labels: dict[str, str]) -> WireError | None:
    for label, value in labels.items():
        reason = unsafe_char(value)
        if reason is not None:
            return WireError(f"{path}.{label}", reason, "unsafe_text")
    return None


def _version_error(version: int) -> WireError:
    spoken = " and ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
    return WireError("$.version", f"unsupported schema version {version} (this end speaks {spoken})")


def decode_response(body: bytes) -> IngestResponse:
    try:
        return _response_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _wire_error(exc) from None


def encode(obj: Envelope | Batch | IngestResponse | ItemResult) -> bytes:
    return _encoder.encode(obj)
