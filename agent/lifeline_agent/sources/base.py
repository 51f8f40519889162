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
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from lifeline_agent.errors import SourceParseError, SourceReadError, SourceUnavailable
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
        self._used: set[str] = set()

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


# Lab sections and the access technology names the lab writes → the agent's names.
FIXTURE_SECTIONS = ("wifi", "cellular", "power")


class FixtureFile:
    """Replays recorded values in the lab's fixture format (``lifeline_lab.fixtures``).

    JSON lines, each ``{"ts_ms": <unix ms>, "wifi": {...}, "cellular": {...}, "power": {...}}`` with
    any section optional. Each section replays on its own: at time *now* it is the section of the
    latest line with ``ts_ms <= now`` that has it, so a scenario can write its whole timeline up
    front. A section set to ``null`` means the hardware is gone. The file is re-read only when its
    size or mtime changes; a malformed line is an error naming ``path:line`` — nothing is skipped.
    """

    def __init__(self, path: str, clock: Callable[[], float] | None = None) -> None:
        self.path = path
        self._clock = clock or _wall_clock
        self._stamp: tuple[int, int] | None = None
        # section → [(ts_ms, line, data or None)] sorted by time, then line
        self._timeline: dict[str, list[tuple[int, int, dict[str, Any] | None]]] = {}

    def latest(self, source: str) -> Record | None:
        """The section in force now, or None when absent or gone (``null``)."""
        self._refresh()
        now_ms = int(self._clock() * 1000)
        current: tuple[int, int, dict[str, Any] | None] | None = None
        for entry in self._timeline.get(source, ()):
            if entry[0] > now_ms:
                break
            current = entry
        if current is None or current[2] is None:
            return None
        return Record(current[2], f"{self.path}:{current[1]}.{source}")

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceReadError(f"fixture file {self.path}: {exc.strerror}") from exc
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        timeline: dict[str, list[tuple[int, int, dict[str, Any] | None]]] = {}
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                where = f"{self.path}:{number}"
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceParseError(where, f"not JSON ({exc.msg})") from exc
                if not isinstance(data, dict):
                    raise SourceParseError(where, 'must be an object with a "ts_ms" number')
                ts = data.get("ts_ms")
                if isinstance(ts, bool) or not isinstance(ts, int | float):
                    raise SourceParseError(f"{where}.ts_ms", f"must be Unix milliseconds (got {ts!r})")
                for key, value in data.items():
                    if key == "ts_ms":
                        continue
                    if key not in FIXTURE_SECTIONS:
                        raise SourceParseError(
                            f"{where}.{key}", f"unknown section (one of {', '.join(FIXTURE_SECTIONS)})"
                        )
                    if value is not None and not isinstance(value, dict):
                        raise SourceParseError(f"{where}.{key}", "must be an object or null")
                    timeline.setdefault(key, []).append((int(ts), number, value))
        for entries in timeline.values():
            entries.sort(key=lambda entry: (entry[0], entry[1]))
        self._timeline = timeline
        self._stamp = stamp


def _wall_clock() -> float:
    import time

    return time.time()


class FixtureReplay(ABC, Generic[F]):
    """The fixture backend of a hardware source: replays its ``section`` of a ``FixtureFile``.

    A subclass names the section and turns the record in force into facts (``facts``); this class
    does the rest: available while the file exists, an error when the section is absent or gone,
    and every key of the record checked as used.
    """

    name = "fixture"
    section: ClassVar[str]

    def __init__(self, fixture: FixtureFile) -> None:
        self.fixture = fixture

    def available(self) -> Availability:
        if os.path.exists(self.fixture.path):
            return Availability(True)
        return Availability(False, f"fixture file {self.fixture.path} missing")

    def read(self) -> F:
        rec = self.fixture.latest(self.section)
        if rec is None:
            raise SourceReadError(f"no {self.section} record in {self.fixture.path}")
        facts = self.facts(rec)
        rec.finish()
        return facts

    @abstractmethod
    def facts(self, rec: Record) -> F:
        """The facts a record of ``section`` says (unknown keys are caught after this returns)."""


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


def run_tool(argv: Sequence[str], timeout: float, missing: str = "") -> subprocess.CompletedProcess[str]:
    """Run a command-line backend (``mmcli``, ``ss`` …) to completion, its exit status unchecked.

    A program that is not installed is ``SourceUnavailable`` (``missing``, or "<program> not
    installed"); one that outlives ``timeout`` is ``SourceReadError``.
    """
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise SourceUnavailable(missing or f"{argv[0]} not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceReadError(f"{argv[0]} timed out after {timeout:g}s") from exc


def read_first(backends: tuple[B, ...], read: Callable[[B], T]) -> tuple[T, B]:
    """The first backend that reads; a backend raising ``SourceUnavailable`` hands over to the next."""
    reasons = []
    for backend in backends:
        try:
            return read(backend), backend
        except SourceUnavailable as exc:
            reasons.append(f"{backend.name}: {exc.reason}")
    raise SourceUnavailable("; ".join(reasons) or "no backend")
