"""A request decoded and checked, waiting for its commit (``Pending``), in the form both decoders
produce: each series' newest sample (``Candidate``) — or, for the steady batch of one agent in
the series form, its values laid out by the series' shape (``Shape``, ``Columns``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

import msgspec

from lifeline_collector.fleet import SeriesKey, SeriesState
from lifeline_collector.store import AgentRow, BatchRow, LatestState
from lifeline_wire.schema import ItemResult
from lifeline_wire.schema import Point as WirePoint

_by_time = itemgetter(0)
_VALUE = attrgetter("value")
_TS = attrgetter("ts_ms")
_KEY_NAME, _KEY_LABELS = itemgetter(0), itemgetter(1)  # of a SeriesKey
_STREAK = attrgetter("zero_streak")


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
