"""The board's live feed: one computation of the rows, shared by every open board.

The collector tells the hub which positions it learned something about (after each ingest commit
and each alert change); the hub recomputes those rows at once. Once a second it recomputes the rows
the clock alone may change (positions falling silent; all of them when a maintenance window starts
or ends), and every row every ``FULL_PASS_EVERY`` (what other processes, such as the CLI, wrote).
Each changed row is rendered once and sent, with only the other changed rows, to every
subscriber: a board costs its subscriber queue, not a computation, so 50 boards cost the collector
what one does, plus the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifeline_collector.alerting.silences import Silence
from lifeline_collector.board.rows import Row, counts, row_of
from lifeline_collector.errors import StoreError

if TYPE_CHECKING:
    from lifeline_collector.people.store import PeopleStore
    from lifeline_collector.service import Collector

log = logging.getLogger("lifeline_collector.board")

CLOCK_PASS_EVERY = 1.0  # seconds: silence and maintenance windows follow the clock alone
FULL_PASS_EVERY = 10.0  # seconds: every row (acks and silences written by the CLI, renames)
HOUSEKEEPING_EVERY = 3600.0  # seconds between runs of ``hourly`` (pruning)
QUEUE_LIMIT = 64  # messages a slow board may lag behind before it is dropped (it reconnects)


@dataclass(slots=True, eq=False)  # each subscriber is itself, kept in a set
class Subscriber:
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    dropped: bool = False


class BoardHub:
    def __init__(
        self,
        service: Collector,
        people: PeopleStore,
        render_row: Callable[[Row, float | None], str],
    ) -> None:
        self.service = service
        self.people = people
        self.render_row = render_row
        self.rows: dict[str, Row] = {}
        self.since: dict[str, float] = {}  # agent → when its row took its current state
        self.version = 0
        self.subscribers: set[Subscriber] = set()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.html: dict[str, str] = {}  # agent → its row rendered (once per change)
        self.running = False
        self._windows: frozenset[str] = frozenset()  # maintenance windows in force at the last pass
        # Called once per pass with the rows whose state changed (and what they were before).
        self.on_state: list[Callable[[list[tuple[Row, Row | None]]], None]] = []
        self.hourly: list[Callable[[], None]] = []  # run from the hub's loop, first at its start
        self.refresh_all()

    # --- what the collector calls -----------------------------------------------------------------

    def notify(self, agents: Iterable[str] = ()) -> None:
        """Something changed about these positions (scopes of alerts are agent ids, or ``fleet:…``)."""
        self._dirty.update(agents)
        self._wake.set()

    def notify_all(self) -> None:
        self._dirty.update(self.service.fleet.agents)
        self._wake.set()

    # --- computing rows ---------------------------------------------------------------------------

    def maintenance(self) -> dict[str, tuple[Silence, str]]:
        """Maintenance windows not yet over, by silence id, with their reasons."""
        windows = self.people.maintenance()
        found: dict[str, tuple[Silence, str]] = {}
        for silence in self.service.registry.silences.values():
            row = windows.get(silence.id)
            if row is not None:
                found[silence.id] = (silence, row.reason or "maintenance")
        return found

    def _refresh(self, agents: Iterable[str]) -> list[Row]:
        service = self.service
        now = service.clock.now()
        windows = self.maintenance()
        self._windows = frozenset(s.id for s, _ in windows.values() if s.state(now) == "active")
        changed: list[Row] = []
        moved: list[tuple[Row, Row | None]] = []
        for agent_id in agents:
            view = service.fleet.agents.get(agent_id)
            if view is None:
                if self.rows.pop(agent_id, None) is not None:
                    self.since.pop(agent_id, None)
                    self.html.pop(agent_id, None)
                    changed.append(_gone(agent_id))
                continue
            row = row_of(service, view, now, windows)
            old = self.rows.get(agent_id)
            if row.same(old):
                continue
            if old is None or old.state != row.state:
                self.since[agent_id] = now if old is not None else _began(row, now)
                moved.append((row, old))
            self.rows[agent_id] = row
            self.html[agent_id] = self.render_row(row, self.since.get(agent_id))
            changed.append(row)
        if moved:
            for listener in self.on_state:
                listener(moved)
        return changed

    def catch_up(self) -> None:
        """Apply what the collector told the hub and positions added or removed, now (a page being
        rendered must not miss what the hub's loop has not reached yet)."""
        agents = self.service.fleet.agents
        dirty, self._dirty = self._dirty, set()
        dirty |= agents.keys() ^ self.rows.keys()
        self.publish(self._refresh(sorted(dirty)))

    def _clock_due(self) -> list[str]:
        """The rows the clock alone may have changed since the last pass."""
        now = self.service.clock.now()
        windows = self.maintenance()
        active = frozenset(s.id for s, _ in windows.values() if s.state(now) == "active")
        agents = self.service.fleet.agents
        if active != self._windows or agents.keys() != self.rows.keys():
            return sorted(set(agents) | set(self.rows))
        quiet = now - self.service.config.alerting.silent_after
        return [
            agent_id
            for agent_id, row in self.rows.items()
            if row.state != "silent" and row.last_seen is not None and row.last_seen <= quiet
        ]

    def refresh_all(self) -> list[Row]:
        known = set(self.service.fleet.agents) | set(self.rows)
        return self._refresh(sorted(known))

    def snapshot(self) -> list[Row]:
        return list(self.rows.values())

    def message(self, rows: list[Row], *, full: bool = False) -> str:
        """One server-sent event with the changed rows (``full``: every row), rendered, and the counts."""
        payload = {
            "v": self.version,
            "full": full,
            "rows": [
                {"id": row.agent, "removed": True}
                if row.state == "gone"
                else {
                    "id": row.agent,
                    "site": row.site,
                    "state": row.state,
                    "rank": row.rank,
                    "html": self.html[row.agent],
                }
                for row in rows
            ],
            "counts": counts(self.rows.values()),
        }
        return f"event: rows\nid: {self.version}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"

    def publish(self, rows: list[Row]) -> None:
        if not rows:
            return
        self.version += 1
        text = self.message(rows)
        for subscriber in list(self.subscribers):
            try:
                subscriber.queue.put_nowait(text)
            except asyncio.QueueFull:
                # A board that cannot keep up is dropped; it reconnects and starts from a full page.
                subscriber.dropped = True
                self.subscribers.discard(subscriber)

    # --- the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="board-hub")
        self.running = True

    async def stop(self) -> None:
        self.running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_clock = loop.time() + CLOCK_PASS_EVERY
        next_full = loop.time() + FULL_PASS_EVERY
        next_housekeeping = loop.time()
        while True:
            # asyncio.timeout, not wait_for: no inner task that a cancellation could get stuck on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_clock - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if loop.time() >= next_housekeeping:
                    next_housekeeping = loop.time() + HOUSEKEEPING_EVERY
                    for job in self.hourly:
                        job()
                if loop.time() >= next_full:
                    next_full = loop.time() + FULL_PASS_EVERY
                    next_clock = loop.time() + CLOCK_PASS_EVERY
                    self._dirty.clear()
                    self.publish(self.refresh_all())
                elif loop.time() >= next_clock:
                    next_clock = loop.time() + CLOCK_PASS_EVERY
                    dirty, self._dirty = self._dirty, set()
                    self.publish(self._refresh(sorted(dirty | set(self._clock_due()))))
                else:
                    dirty, self._dirty = self._dirty, set()
                    self.publish(self._refresh(sorted(dirty)))
            except StoreError as exc:
                log.error("board not refreshed: %s", exc)
            except Exception:  # the board must keep going whatever one row does
                log.exception("board refresh failed")

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)


def _began(row: Row, now: float) -> float:
    """When a row first seen (the collector starting) took its state, as far as the evidence says:
    its open alert's start, its last report for a silent one, else now."""
    if row.state == "silent" and row.last_seen is not None:
        return row.last_seen
    if row.alert is not None and row.state != "ok":
        return row.alert.starts_at
    return now


def _gone(agent_id: str) -> Row:
    return Row(agent_id, "", "", "", "gone", "", None, None, None, None, None, "")
