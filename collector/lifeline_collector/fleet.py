"""The in-memory view of every agent: identity, when it was last heard, its latest series.

Rebuilt from the store at start and updated after each committed ingest; exposition and the alert
rules read it, so neither touches SQLite on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter

from lifeline_collector.store import AgentRow, SeqTotals, Store, labels_key
from lifeline_wire import Batch

NO_GAPS = SeqTotals(0, 0)
_by_time = itemgetter(0)
SeriesKey = tuple[str, str]  # (metric name, labels_key)
Point = tuple[int, float, dict[str, str]]  # (ts_ms, value, labels) of one sample


@dataclass(slots=True)
class SeriesState:
    labels: dict[str, str]
    value: float
    ts_ms: int
    zero_streak: int  # samples in a row (by timestamp) whose value was 0: failed probe rounds


@dataclass(slots=True)
class AgentView:
    id: str
    site: str = ""
    position: str = ""
    last_seen: float | None = None  # collector clock, seconds
    clock_offset: float | None = None  # agent clock minus collector clock, seconds
    seq: SeqTotals = NO_GAPS
    series: dict[str, dict[str, SeriesState]] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """How a supervisor names the position: "Position 12 (north)"."""
        who = f"Position {self.position}" if self.position else f"Agent {self.id}"
        return f"{who} ({self.site})" if self.site else who

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

    def plan(self, agent: str, batches: Iterable[Batch]) -> dict[SeriesKey, SeriesState]:
        """The newest state of every series these batches touch, without changing the view.

        Samples older than what is already known (backfill) are stored but do not move "latest";
        newer ones are applied in timestamp order so the zero streak counts rounds, not arrivals.
        """
        pending: dict[SeriesKey, list[Point]] = {}
        for batch in batches:
            for sample in batch.every_sample():
                key = (sample.name, labels_key(sample.labels))
                pending.setdefault(key, []).append((sample.ts_ms, sample.number, sample.labels))
        return self.plan_points(agent, pending)

    def plan_points(self, agent: str, pending: dict[SeriesKey, list[Point]]) -> dict[SeriesKey, SeriesState]:
        """``plan`` for points already grouped by series (ingest groups them while storing)."""
        view = self.agents.get(agent)
        known = view.series if view is not None else {}
        out: dict[SeriesKey, SeriesState] = {}
        for key, points in pending.items():
            current = known.get(key[0], {}).get(key[1])
            state = (
                None
                if current is None
                else SeriesState(current.labels, current.value, current.ts_ms, current.zero_streak)
            )
            for ts_ms, value, labels in sorted(points, key=_by_time):
                if state is None:
                    state = SeriesState(dict(labels), value, ts_ms, 1 if value == 0 else 0)
                elif ts_ms > state.ts_ms:
                    state.zero_streak = state.zero_streak + 1 if value == 0 else 0
                    state.value = value
                    state.ts_ms = ts_ms
            if state is not None and (current is None or state.ts_ms != current.ts_ms):
                out[key] = state
        return out

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
        view.site = site or view.site
        view.position = position or view.position
        view.last_seen = seen
        view.clock_offset = clock_offset
        view.seq = seq
        return view
