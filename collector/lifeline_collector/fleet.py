"""The in-memory view of every agent: identity, when it was last heard, its latest series.

Rebuilt from the store at start and updated after each committed ingest; exposition and the alert
rules read it, so neither touches the database on the hot path. Collectors sharing one PostgreSQL
also merge what the others stored and heard (``merge_reported``, ``merge_beat``; see
lifeline_collector.replica).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from lifeline_collector.store import AgentRow, LatestState, SeqTotals, Store
from lifeline_wire import BeatDigest

NO_GAPS = SeqTotals(0, 0)
SeriesKey = tuple[str, str]  # (metric name, labels_key)
# The metrics whose streak of zeros a rule reads (failed probe rounds in a row); for every other
# series ``zero_streak`` stays 0, so ingest walks a series' points only where it matters.
STREAK_METRICS: Final = frozenset({"lifeline_probe_success"})


@dataclass(slots=True)
class SeriesState:
    labels: dict[str, str]
    value: float
    ts_ms: int
    zero_streak: int  # samples in a row (by timestamp) whose value was 0 (``STREAK_METRICS`` only)


@dataclass(frozen=True, slots=True)
class Slots:
    """An agent's series states in the order its batches list them (``keys``, one list per shape of
    batch, kept by ingest), so a steady batch is planned without a lookup per series; ``others``
    are the agent's series that batches of this shape do not carry, as stored rows."""

    keys: list[SeriesKey]
    states: list[SeriesState | None]
    others: list[LatestState]


@dataclass(slots=True)
class AgentView:
    id: str
    site: str = ""
    position: str = ""
    last_seen: float | None = None  # collector clock, seconds
    clock_offset: float | None = None  # agent clock minus collector clock, seconds
    seq: SeqTotals = NO_GAPS
    series: dict[str, dict[str, SeriesState]] = field(default_factory=dict)
    slots: Slots | None = None  # ``series`` as ingest last laid it out; dropped by other writes
    # Heartbeats (written by the receiver thread; each field is replaced whole, so a reader on the
    # event loop sees either the old or the new value). None until a valid beat since this start.
    last_beat: float | None = None  # collector clock of the last valid heartbeat
    beat: BeatDigest | None = None  # the digest that beat carried
    # path name ("tunnel", "backup", "public") -> collector clock of the last valid beat over it;
    # a new path replaces the dict (never grows it in place) so readers can iterate it safely.
    beat_paths: dict[str, float] = field(default_factory=dict)
    beat_interval: float | None = None  # seconds between beats, as the agent announces it
    # Collector clock of the beat with which the agent said it stops on purpose; None once it
    # beats again without saying so. A signed-off position is not silent: nobody is paged.
    signed_off: float | None = None

    @property
    def display_name(self) -> str:
        """How a supervisor names the position: "Position 12 (north)"."""
        who = f"Position {self.position}" if self.position else f"Agent {self.id}"
        return f"{who} ({self.site})" if self.site else who

    @property
    def last_heard(self) -> float | None:
        """The later of the last batch and the last heartbeat (None if neither came)."""
        seen, beat = self.last_seen, self.last_beat
        if seen is None:
            return beat
        return seen if beat is None or seen >= beat else beat

    def named(self, name: str) -> Iterator[SeriesState]:
        yield from self.series.get(name, {}).values()


class Fleet:
    def __init__(self) -> None:
        self.agents: dict[str, AgentView] = {}

    @classmethod
    def load(cls, store: Store) -> Fleet:
        fleet = cls()
        fleet.sync_agents(store.agents())
        totals = store.seq_totals()
        for agent_id, view in fleet.agents.items():
            view.seq = totals.get(agent_id, NO_GAPS)
        for row in store.latest():
            known = fleet.agents.get(row.agent)
            if known is None:
                continue  # a revoked agent's history stays in the store, not in the live view
            known.series.setdefault(row.name, {})[row.labels] = SeriesState(
                json.loads(row.labels), row.value, row.ts_ms, row.zero_streak
            )
        return fleet

    def sync_agents(self, rows: Iterable[AgentRow]) -> None:
        """Follow the registry: new agents appear, revoked ones disappear, names update."""
        active = {row.id: row for row in rows if row.active}
        for gone in set(self.agents) - set(active):
            del self.agents[gone]
        for row in active.values():
            view = self.agents.get(row.id)
            if view is None:
                view = self.agents[row.id] = AgentView(row.id)
                view.last_seen = None if row.last_seen_ms is None else row.last_seen_ms / 1000
                view.clock_offset = None if row.clock_offset_ms is None else row.clock_offset_ms / 1000
            view.site = row.site
            view.position = row.position

    def ensure(self, row: AgentRow) -> AgentView:
        """The view of an agent that just authenticated (it may have been added a moment ago)."""
        view = self.agents.get(row.id)
        if view is None:
            view = self.agents[row.id] = AgentView(row.id, row.site, row.position)
        return view

    def slots(self, agent: str, keys: list[SeriesKey]) -> Slots:
        """The agent's states laid out as ``keys`` (kept while only ``set_slots`` writes them)."""
        view = self.agents.get(agent)
        if view is None:
            return Slots(keys, [None] * len(keys), [])
        if view.slots is not None and view.slots.keys is keys:
            return view.slots
        series = view.series
        states = [series.get(name, {}).get(key) for name, key in keys]
        wanted = set(keys)
        others = [
            (name, key, state.value, state.ts_ms, state.zero_streak)
            for name, by_labels in series.items()
            for key, state in by_labels.items()
            if (name, key) not in wanted
        ]
        view.slots = Slots(keys, states, others)
        return view.slots

    def set_slots(
        self,
        view: AgentView,
        slots: Slots,
        planned: list[SeriesState | None],
        states: list[SeriesState | None],
    ) -> None:
        """Apply a committed plan made on ``slots`` (None: the series did not move)."""
        series = view.series
        for (name, key), state in zip(slots.keys, planned, strict=True):
            if state is not None:
                by_labels = series.get(name)
                if by_labels is None:
                    by_labels = series[name] = {}
                by_labels[key] = state
        view.slots = Slots(slots.keys, states, slots.others)

    def apply(
        self,
        row: AgentRow,
        updates: dict[SeriesKey, SeriesState],
        *,
        site: str,
        position: str,
        seen: float,
        clock_offset: float,
        seq: SeqTotals,
    ) -> AgentView:
        view = self.ensure(row)
        for (name, key), state in updates.items():
            view.series.setdefault(name, {})[key] = state
        if updates:
            view.slots = None  # laid out again by the next batch that uses it
        # What the operator registered wins; the agent's own word only fills in what is empty.
        view.site = view.site or site
        view.position = view.position or position
        view.last_seen = seen
        view.clock_offset = clock_offset
        view.seq = seq
        return view

    def merge_reported(
        self,
        agent: str,
        seen: float,
        clock_offset: float | None,
        states: Iterable[LatestState],
    ) -> AgentView | None:
        """What another collector stored for ``agent``'s latest batch: taken whole if it is newer
        than what this process knows (None: not newer, or not an active agent here)."""
        view = self.agents.get(agent)
        if view is None or (view.last_seen is not None and seen <= view.last_seen):
            return None
        series: dict[str, dict[str, SeriesState]] = {}
        for name, labels, value, ts_ms, zero_streak in states:
            series.setdefault(name, {})[labels] = SeriesState(json.loads(labels), value, ts_ms, zero_streak)
        view.series = series
        view.slots = None
        view.last_seen = seen
        view.clock_offset = clock_offset
        return view

    def merge_beat(self, beat: SharedBeat) -> AgentView | None:
        """A beat another collector verified: its fields are taken where they are newer (None: it
        told nothing new). Each field is replaced whole, as the heartbeat receiver does."""
        view = self.agents.get(beat.agent)
        if view is None:
            return None
        if view.last_beat is not None and beat.at <= view.last_beat:
            return None
        paths = view.beat_paths
        newer = {path: at for path, at in beat.paths.items() if at > paths.get(path, float("-inf"))}
        if newer:
            view.beat_paths = {**paths, **newer}
        view.beat = beat.digest
        view.beat_interval = beat.interval
        view.signed_off = beat.signed_off
        view.last_beat = beat.at
        return view


@dataclass(frozen=True, slots=True)
class SharedBeat:
    """The newest beat of one agent that some collector verified (times on collector clocks)."""

    agent: str
    at: float  # when that collector received it
    paths: dict[str, float]  # path -> the last valid beat over it there
    digest: BeatDigest | None
    interval: float | None
    signed_off: float | None  # when the agent said it stops on purpose (None: it does not)
