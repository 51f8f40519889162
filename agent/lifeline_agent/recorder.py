"""Collects the samples and events the agent produces until the next batch takes them.

Every sample must name a metric of ``lifeline_wire.catalog.CATALOG`` with exactly its declared
labels: anything else is a bug in the agent and raises ValueError at the call site, long before a
collector could reject it. The latest value of every series is kept for the local /metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_wire import Event, Sample
from lifeline_wire.catalog import CATALOG, MetricSpec

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
EventAttr = str | int | float | bool


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
        self.validate(name, labels)
        sample = Sample(name=name, value=float(value), ts_ms=ts_ms or now_ms(self._clock), labels=labels)
        with self._lock:
            self._samples.append(sample)
            self._latest[series_key(name, labels)] = float(value)

    def forget(self, name: str, labels: Mapping[str, str]) -> None:
        """Drop a series from /metrics (e.g. the RTT of a target that stopped answering)."""
        with self._lock:
            self._latest.pop(series_key(name, labels), None)

    def event(
        self, type_: str, attributes: Mapping[str, EventAttr] | None = None, ts_ms: int | None = None
    ) -> Event:
        event = Event(type=type_, ts_ms=ts_ms or now_ms(self._clock), attributes=dict(attributes or {}))
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
