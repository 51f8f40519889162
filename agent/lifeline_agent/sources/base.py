"""The shapes every source shares: availability, samples, events, a reading, the fixture file.

A source reads local state (a link, the VPN, the radio, the battery, the CAD sockets) and returns a
``Reading``: samples named from the metric catalog, events for transitions it noticed, a typed
``facts`` object the health model reads, and ``error`` when this read produced no data. ``read()``
never raises for an expected failure: "no data" is an error string, never an empty healthy reading.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from lifeline_agent.sources.errors import SourceParseError, SourceReadError, SourceUnavailable
from lifeline_wire.catalog import CATALOG

IS_LINUX = sys.platform.startswith("linux")

F = TypeVar("F")
EventValue = str | int | float | bool


class Availability(NamedTuple):
    """Whether a source can produce data here, and if not, what it lacks."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SourceSample:
    """One value of a catalog metric. ``value`` may be ``math.inf`` (e.g. a handshake that never happened)."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """A transition a source noticed between two reads (``type`` matches the wire's event pattern)."""

    type: str
    attributes: dict[str, EventValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reading(Generic[F]):
    samples: tuple[SourceSample, ...] = ()
    events: tuple[SourceEvent, ...] = ()
    facts: F | None = None
    error: str = ""  # non-empty when this read produced no (or only partial) data

    @property
    def ok(self) -> bool:
        return not self.error


class Source(Protocol):
    """What the scheduler calls. See the package docstring for the contract."""

    name: str

    def available(self) -> Availability: ...

    def read(self) -> Reading[Any]: ...


def sample(name: str, value: float, **labels: str) -> SourceSample:
    """A sample of a catalog metric; an undeclared name or a wrong label set is a programming error."""
    spec = CATALOG.get(name)
    if spec is None:
        raise ValueError(f"metric {name!r} is not declared in lifeline_wire.catalog")
    if set(labels) != set(spec.labels):
        raise ValueError(f"metric {name!r} takes labels {sorted(spec.labels)}, got {sorted(labels)}")
    if math.isnan(value):
        raise ValueError(f"metric {name!r}: NaN is not a measurement")
    return SourceSample(name, dict(labels), float(value))


class UnavailableSource:
    """Stands in for a source that cannot run here, so the gap is reported instead of hidden."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def available(self) -> Availability:
        return Availability(False, self.reason)

    def read(self) -> Reading[Any]:
        return Reading(error=self.reason)

    def __repr__(self) -> str:
        return f"UnavailableSource({self.name!r}, {self.reason!r})"


def not_linux(name: str) -> UnavailableSource:
    return UnavailableSource(name, f"needs Linux (running on {sys.platform})")


# --- fixture records -----------------------------------------------------------------------------


class Record:
    """Typed access to one fixture record; unknown keys are reported by ``finish()``."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self._data = data
        self._where = where
        self._used: set[str] = {"source"}

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self._data.get(key)

    def number(self, key: str) -> float | None:
        value = self._get(key)
        if value is None:
            return None
        if value == "+Inf":
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SourceParseError(f"{self._where}.{key}", f"must be a number (got {value!r})")
        return float(value)

    def integer(self, key: str) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SourceParseError(f"{self._where}.{key}", f"must be an integer (got {value!r})")
        return value

    def flag(self, key: str) -> bool | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise SourceParseError(f"{self._where}.{key}", f"must be true or false (got {value!r})")
        return value

    def text(self, key: str, default: str = "") -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise SourceParseError(f"{self._where}.{key}", f"must be a string (got {value!r})")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise SourceParseError(f"{self._where}.{unknown[0]}", "unknown key")


class FixtureFile:
    """Replays recorded values: a JSON-lines file, one object per line with a ``source`` key.

    The newest line for a source wins, so a lab scenario changes what the agent sees by appending
    a line. The file is re-read only when its size or mtime changes. A malformed line is an error
    naming ``path:line``; nothing is silently skipped.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._latest: dict[str, tuple[int, dict[str, Any]]] = {}

    def latest(self, source: str) -> Record | None:
        self._refresh()
        hit = self._latest.get(source)
        if hit is None:
            return None
        line, data = hit
        return Record(data, f"{self.path}:{line}")

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceReadError(f"fixture file {self.path}: {exc.strerror}") from exc
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceParseError(f"{self.path}:{number}", f"not JSON ({exc.msg})") from exc
                if not isinstance(data, dict) or not isinstance(data.get("source"), str):
                    raise SourceParseError(
                        f"{self.path}:{number}", 'must be an object with a "source" string'
                    )
                latest[data["source"]] = (number, data)
        self._latest = latest
        self._stamp = stamp


# --- backends --------------------------------------------------------------------------------------


class Backend(Protocol):
    """One way of reading a source (nl80211, /proc, a fixture file …)."""

    @property
    def name(self) -> str: ...

    def available(self) -> Availability: ...


B = TypeVar("B", bound=Backend)
T = TypeVar("T")


def first_available(backends: tuple[Backend, ...]) -> Availability:
    """Ok with the name of the first usable backend, else every backend's reason."""
    reasons = []
    for backend in backends:
        availability = backend.available()
        if availability.ok:
            return Availability(True, backend.name)
        reasons.append(f"{backend.name}: {availability.reason}")
    return Availability(False, "; ".join(reasons) or "no backend")


def read_first(backends: tuple[B, ...], read: Callable[[B], T]) -> tuple[T, B]:
    """The first backend that reads; a backend raising ``SourceUnavailable`` hands over to the next."""
    reasons = []
    for backend in backends:
        try:
            return read(backend), backend
        except SourceUnavailable as exc:
            reasons.append(f"{backend.name}: {exc.reason}")
    raise SourceUnavailable("; ".join(reasons) or "no backend")
