"""Collects the samples and events the agent produces until the next batch takes them.

Every sample must name a metric of ``lifeline_wire.catalog.CATALOG`` with exactly its declared
labels: anything else is a bug in the agent and raises ValueError at the call site, long before a
collector could reject it. What comes from the world is made to fit the contract here instead,
since one value the collector refuses costs the whole batch: a non-finite value where the metric
must be finite is not sent (counted in ``not_finite``, warned once per metric), and label values
and event texts lose control and bidirectional-override characters and are cut to the wire's
lengths. The latest value of every series is kept for the local /metrics.

Some labels state a fact that changes (the verdict's words, the interface's path, the modem's
radio technology) rather than name a thing: ``FACT_LABELS``. A sample with a new fact replaces
the series that carried the old one, so /metrics shows only the current one; for an ``info``
metric the replaced series is also sent once at 0, so the collector, which keeps the latest value
of every label set it was sent, stops reading the old fact as true.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping

import msgspec

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_wire import Event, Sample
from lifeline_wire.catalog import CATALOG, MetricSpec
from lifeline_wire.schema import (
    LABEL_NAME_RE,
    MAX_EVENT_ATTRIBUTE_LENGTH,
    MAX_EVENT_ATTRIBUTES,
    MAX_LABEL_VALUE,
    NON_FINITE_METRICS,
    unsafe_char,
)

log = logging.getLogger(__name__)

_LABEL_NAME = re.compile(LABEL_NAME_RE)


def _event_type_pattern() -> str:
    """The pattern the wire declares for ``Event.type`` (read from the schema, not copied)."""
    info = msgspec.inspect.type_info(Event)
    for field in info.fields if isinstance(info, msgspec.inspect.StructType) else ():
        if field.name == "type" and isinstance(field.type, msgspec.inspect.StrType) and field.type.pattern:
            return field.type.pattern
    raise RuntimeError("the wire's Event.type declares no pattern")


_EVENT_TYPE = re.compile(_event_type_pattern())

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
EventAttr = str | int | float | bool


# Metrics whose other labels are facts about the thing these labels name: only one label set per
# thing is current. (Labels absent here identify a series on their own, as usual.)
FACT_LABELS: dict[str, tuple[str, ...]] = {
    "lifeline_agent_info": (),
    "lifeline_verdict_info": (),
    "lifeline_cellular_signal_quality_ratio": ("modem",),
    "lifeline_interface_up": ("interface",),
    "lifeline_interface_carrier_changes_total": ("interface",),
    "lifeline_interface_errors_total": ("interface", "direction"),
    "lifeline_interface_drops_total": ("interface", "direction"),
    "lifeline_interface_bytes_total": ("interface", "direction"),
    "lifeline_vpn_up": ("interface",),
    "lifeline_vpn_interface_up": ("interface",),
    "lifeline_vpn_handshake_age_seconds": ("interface",),
    "lifeline_vpn_bytes_total": ("interface", "direction"),
}


def _check_fact_labels(catalog: Mapping[str, MetricSpec]) -> None:
    for name, identity in FACT_LABELS.items():
        spec = catalog.get(name)
        if spec is None or not set(identity) < set(spec.labels):
            raise ValueError(f"FACT_LABELS[{name!r}] must name a catalog metric and some of its labels")


_check_fact_labels(CATALOG)


def wire_safe(text: str, limit: int) -> str:
    """``text`` as the contract takes it: control and bidirectional-override characters replaced
    by U+FFFD, cut to ``limit`` characters. The same text always comes out the same, so a label
    value made safe still names one series."""
    if unsafe_char(text) is not None:
        text = "".join("\ufffd" if unsafe_char(char) else char for char in text)
    return text[:limit]


def series_key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


class Recorder:
    """Thread-safe: probes record on the event loop, /metrics reads from its HTTP thread."""

    def __init__(self, clock: Clock | None = None, catalog: Mapping[str, MetricSpec] = CATALOG) -> None:
        self._clock = clock or SystemClock()
        self._catalog = catalog
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._events: list[Event] = []
        self._latest: dict[SeriesKey, float] = {}
        # (metric, identity label values) -> the series that carries the current fact
        self._current: dict[tuple[str, tuple[str, ...]], SeriesKey] = {}
        self._groups: dict[str, set[SeriesKey]] = {}  # group -> the series of its last reading
        self.not_finite: Counter[str] = Counter()  # samples not sent: not finite where the contract wants it
        # Each metric's declared labels, as a set (built once: the catalog does not change).
        self._label_sets = {name: frozenset(spec.labels) for name, spec in catalog.items()}

    def validate(self, name: str, labels: Mapping[str, str]) -> MetricSpec:
        spec = self._catalog.get(name)
        if spec is None:
            raise ValueError(f"metric {name!r} is not in the catalog")
        if labels.keys() != self._label_sets[name]:
            raise ValueError(f"metric {name!r} takes labels {sorted(spec.labels)}, got {sorted(labels)}")
        for key, value in labels.items():
            if not isinstance(value, str):
                raise ValueError(f"metric {name!r} label {key!r} must be a string, got {value!r}")
        return spec

    def sample(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, ts_ms: int | None = None
    ) -> None:
        labels = dict(labels or {})
        spec = self.validate(name, labels)
        for label, text in labels.items():
            if len(text) > MAX_LABEL_VALUE or unsafe_char(text) is not None:
                labels[label] = wire_safe(text, MAX_LABEL_VALUE)
        key = series_key(name, labels)
        value = float(value)
        if not math.isfinite(value) and name not in NON_FINITE_METRICS:
            # The contract refuses it, and with it the whole batch: not sent, and the page shows
            # no value rather than the last good one.
            self._not_finite(name, value)
            self.forget(name, labels)
            return
        sample = Sample(name=name, value=value, ts_ms=ts_ms or now_ms(self._clock), labels=labels)
        identity = FACT_LABELS.get(name)
        with self._lock:
            if identity is not None:
                thing = (name, tuple(labels[label] for label in identity))
                replaced = self._current.get(thing)
                self._current[thing] = key
                if replaced is not None and replaced != key:
                    self._latest.pop(replaced, None)
                    if spec.type == "info":  # the old fact no longer holds: say so once
                        self._samples.append(Sample(name, 0.0, sample.ts_ms, dict(replaced[1])))
            self._samples.append(sample)
            self._latest[key] = value

    def _not_finite(self, name: str, value: float) -> None:
        with self._lock:
            first = self.not_finite[name] == 0
            self.not_finite[name] += 1
        if first:
            log.warning(
                "metric %s measured %s, which the contract refuses for it: not sent (warned once per metric)",
                name,
                value,
            )

    def sample_group(
        self, group: str, samples: Iterable[tuple[str, float, Mapping[str, str]]], ts_ms: int | None = None
    ) -> None:
        """Record one complete reading of ``group`` (a source): a series its last reading had and
        this one lacks (the battery's time left once on mains, the Wi-Fi signal once disconnected,
        everything after a failed read) leaves /metrics instead of showing its last value as now."""
        keys: set[SeriesKey] = set()
        for name, value, labels in samples:
            self.sample(name, value, labels, ts_ms)
            keys.add(series_key(name, labels))
        with self._lock:
            gone = self._groups.get(group, set()) - keys
            self._groups[group] = keys
        for name, label_pairs in gone:
            self.forget(name, dict(label_pairs))

    def forget(self, name: str, labels: Mapping[str, str]) -> None:
        """Drop a series from /metrics (e.g. the RTT of a target that stopped answering)."""
        key = series_key(name, labels)
        identity = FACT_LABELS.get(name)
        with self._lock:
            self._latest.pop(key, None)
            if identity is not None:
                thing = (name, tuple(labels[label] for label in identity if label in labels))
                if self._current.get(thing) == key:
                    del self._current[thing]

    def forget_target(self, target: str) -> None:
        """Drop every series of a probe target that is no longer probed (a gateway of a network
        the laptop left): its last values would otherwise stay on /metrics for as long as the
        agent runs, reading as current."""
        with self._lock:
            for key in [key for key in self._latest if ("target", target) in key[1]]:
                del self._latest[key]
            for thing in [thing for thing, key in self._current.items() if ("target", target) in key[1]]:
                del self._current[thing]

    def event(
        self, type_: str, attributes: Mapping[str, EventAttr] | None = None, ts_ms: int | None = None
    ) -> Event:
        """Record an event. A type or attribute name the contract refuses is a bug (ValueError
        here); a measured float that is not finite travels as the wire spells it ("+Inf"), since
        JSON has no infinity and one ``null`` would make the whole batch unreadable."""
        if _EVENT_TYPE.match(type_) is None:
            raise ValueError(f"event type {type_!r} does not match {_EVENT_TYPE.pattern!r}")
        attrs = dict(attributes or {})
        if len(attrs) > MAX_EVENT_ATTRIBUTES:
            raise ValueError(f"event {type_!r} has {len(attrs)} attributes, at most {MAX_EVENT_ATTRIBUTES}")
        for key, value in attrs.items():
            if _LABEL_NAME.match(key) is None:
                raise ValueError(f"event {type_!r} attribute name {key!r} does not match {LABEL_NAME_RE!r}")
            if isinstance(value, float) and not math.isfinite(value):
                attrs[key] = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
            elif isinstance(value, str) and (
                len(value) > MAX_EVENT_ATTRIBUTE_LENGTH or unsafe_char(value) is not None
            ):
                # Texts from the world (an error message with a newline, a long traceroute) would
                # make the collector refuse the whole batch.
                attrs[key] = wire_safe(value, MAX_EVENT_ATTRIBUTE_LENGTH)
        event = Event(type=type_, ts_ms=ts_ms or now_ms(self._clock), attributes=attrs)
        with self._lock:
            self._events.append(event)
        return event

    def drain(self) -> tuple[list[Sample], list[Event]]:
        """Everything recorded since the last drain, oldest first; the buffer is then empty."""
        with self._lock:
            samples, self._samples = self._samples, []
            events, self._events = self._events, []
        return samples, events

    def pending(self) -> int:
        with self._lock:
            return len(self._samples) + len(self._events)

    def latest(self) -> dict[SeriesKey, float]:
        with self._lock:
            return dict(self._latest)
