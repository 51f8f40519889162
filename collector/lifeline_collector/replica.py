"""Fleet state shared by collectors over one PostgreSQL: any collector hears any agent.

Each collector keeps its fleet view in memory (latest values, heartbeats) and must learn what the
others received, so that the leader judges silence and alerts from everything, whichever collector
an agent's batches and beats reach, and so that every collector's board and API show the whole fleet.

- **Beats.** The heartbeat receiver marks each agent it verified a beat from; every ``interval``
  (0.2 s) this module writes those agents' newest beat (when it arrived, the agent's send time and
  boot, the paths, the interval, the digest, whether the agent signs off) into ``fleet_beats`` in
  one pipelined upsert. A row is only ever replaced by a beat the agent sent later, so a beat
  replayed to another collector cannot make a dead position look alive there.
- **Batches.** Ingest already writes each agent's ``last_seen`` and whole latest state in one
  transaction (``agents``, ``agent_latest``); a trigger numbers each change of an ``agents`` row.
- **Polling.** In the same round this module reads the rows of both tables numbered after its
  cursor and hands them to ``apply`` (the collector merges what is newer into its view and, when it
  leads, evaluates those positions at once). Numbers come from one sequence, so a transaction that
  took its number earlier may commit after a later one was read: each poll reads again from the
  cursor of the poll before (merging is idempotent), which covers commits up to one round late.

What the extra hop adds to a silent position's page: a beat reaching a follower is in the leader's
view after at most one flush round plus one poll round (≤ 2 × ``interval`` + two round trips,
≈ 0.4 s), so the leader may see the last beat of a position that goes dark up to that much late;
the page comes at most that much *early* (from the leader's view the silence began at the beat it
last saw), never late. A leader whose own polls fail does not judge silence at all until they
succeed again (``current``): it cannot tell a dark position from one beating to another collector.

Times in ``fleet_beats`` are the receiving collector's clock: collectors must keep their clocks
in step (NTP), as they already must for the agents' clock offsets.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from lifeline_collector.clock import Clock
from lifeline_collector.fleet import Fleet, SharedBeat
from lifeline_collector.heartbeat import BeatReceiver
from lifeline_collector.store.backends import side_connection
from lifeline_wire import BeatDigest

log = logging.getLogger("lifeline_collector.replica")

INTERVAL: Final = 0.2
# A poll older than this and the leader's view of other collectors' beats is not current: it
# does not judge silence (longer than a round and a slow query, far shorter than heartbeat_after).
CURRENT_FOR: Final = 1.0
CONNECT_TIMEOUT: Final = 3

_UPSERT: Final = (
    "INSERT INTO fleet_beats (agent, beat_ms, sent_ms, boot_id, signed_off_ms, paths, beat_interval,"
    " digest, collector) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"
    " ON CONFLICT (agent) DO UPDATE SET beat_ms = GREATEST(fleet_beats.beat_ms, excluded.beat_ms),"
    " sent_ms = excluded.sent_ms, boot_id = excluded.boot_id, signed_off_ms = excluded.signed_off_ms,"
    " paths = fleet_beats.paths || excluded.paths, beat_interval = excluded.beat_interval,"
    " digest = excluded.digest, collector = excluded.collector"
    " WHERE fleet_beats.sent_ms <= excluded.sent_ms"
)
_BEATS: Final = (
    "SELECT agent, beat_ms, sent_ms, signed_off_ms, paths::text, beat_interval, digest, collector, change"
    " FROM fleet_beats WHERE change > %s ORDER BY change"
)
_REPORTED: Final = (
    "SELECT a.id, a.last_seen_ms, a.clock_offset_ms, l.states, a.change FROM agents a"
    " LEFT JOIN agent_latest l ON l.agent = a.id"
    " WHERE a.change > %s AND a.last_seen_ms IS NOT NULL ORDER BY a.change"
)


@dataclass(frozen=True, slots=True)
class Reported:
    """An agent's last stored batch as some collector committed it."""

    agent: str
    seen: float  # collector clock
    clock_offset: float | None
    states: bytes | None  # the agent_latest blob (decoded only if newer)


def _digest(text: str | None) -> BeatDigest | None:
    if not text:
        return None
    layer, state, risk, ttl, ready, backup = json.loads(text)
    return BeatDigest(str(layer), str(state), float(risk), ttl, ready, bool(backup))


def _digest_text(digest: BeatDigest | None) -> str | None:
    if digest is None:
        return None
    return json.dumps(
        [digest.layer, digest.state, digest.risk, digest.time_to_loss, digest.backup_ready, digest.on_backup]
    )


class SharedFleet:
    """The thread that publishes this collector's beats and reads everyone's changes."""

    def __init__(
        self,
        dsn: str,
        fleet: Fleet,
        receiver: BeatReceiver,
        clock: Clock,
        apply: Callable[[list[SharedBeat], list[Reported]], None],
        *,
        interval: float = INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.fleet = fleet
        self.receiver = receiver
        self.clock = clock
        self.apply = apply
        self.interval = interval
        # Which collector wrote a row: its own rows are skipped when read back.
        self.name = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        self.polled_at: float | None = None  # clock time of the last successful round
        self._sent: dict[str, int] = {}  # agent -> newest agent-clock send time known (replays)
        self._beats_from = self._beats_seen = 0
        self._reported_from = self._reported_seen = 0
        self._pending: set[str] = set()  # beats not published yet (the database was away)
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        receiver.changed = set()

    def current(self, now: float) -> bool:
        """Whether the last round succeeded recently: the view holds what the others heard."""
        return self.polled_at is not None and now - self.polled_at <= CURRENT_FOR

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-share", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._close()

    def _run(self) -> None:
        import psycopg

        failing = ""
        while not self._stop.wait(self.interval):
            try:
                self.round()
            except psycopg.Error as exc:
                reason = str(exc).strip() or type(exc).__name__
                if reason != failing:  # one line per kind of trouble, not five a second
                    log.warning("fleet sharing paused: %s; retrying", reason)
                failing = reason
                self._close()
            else:
                if failing:
                    log.info("fleet sharing resumed")
                failing = ""

    def round(self) -> None:
        """Publish the beats verified here since the last round, then read everyone's changes."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        conn = self._conn
        self._pending |= set(list(self.receiver.take_changed()))
        rows = self._beat_rows(self._pending)
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(_UPSERT, rows)
        self._pending = set()
        beats = self._read_beats(conn)
        reported = self._read_reported(conn)
        self.polled_at = self.clock.now()
        if beats or reported:
            self.apply(beats, reported)

    def _beat_rows(self, agents: set[str]) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        for agent_id in sorted(agents):
            view = self.fleet.agents.get(agent_id)
            sent = self.receiver.last_sent(agent_id)
            if view is None or view.last_beat is None or sent is None:
                continue
            boot, sent_ms = sent
            self._sent[agent_id] = max(self._sent.get(agent_id, 0), sent_ms)
            paths = {path: round(at * 1000) for path, at in view.beat_paths.items()}
            rows.append(
                (
                    agent_id,
                    round(view.last_beat * 1000),
                    sent_ms,
                    boot,
                    None if view.signed_off is None else round(view.signed_off * 1000),
                    json.dumps(paths),
                    view.beat_interval or 0.0,
                    _digest_text(view.beat),
                    self.name,
                )
            )
        return rows

    def _read_beats(self, conn: Any) -> list[SharedBeat]:
        rows = conn.execute(_BEATS, (self._beats_from,)).fetchall()
        self._beats_from, self._beats_seen = (
            self._beats_seen,
            max([self._beats_seen, *(int(row[-1]) for row in rows)]),
        )
        out: list[SharedBeat] = []
        for agent, beat_ms, sent_ms, signed_off_ms, paths, interval, digest, collector, _change in rows:
            if collector == self.name:
                continue
            own = self.receiver.last_sent(agent)
            known = max(self._sent.get(agent, 0), own[1] if own is not None else 0)
            if int(sent_ms) < known:
                continue  # older than a beat already known: a replay, or merged before
            self._sent[agent] = int(sent_ms)
            out.append(
                SharedBeat(
                    agent=str(agent),
                    at=int(beat_ms) / 1000,
                    paths={str(p): int(ms) / 1000 for p, ms in json.loads(paths).items()},
                    digest=_digest(digest),
                    interval=float(interval) or None,
                    signed_off=None if signed_off_ms is None else int(signed_off_ms) / 1000,
                )
            )
        return out

    def _read_reported(self, conn: Any) -> list[Reported]:
        rows = conn.execute(_REPORTED, (self._reported_from,)).fetchall()
        self._reported_from, self._reported_seen = (
            self._reported_seen,
            max([self._reported_seen, *(int(row[-1]) for row in rows)]),
        )
        return [
            Reported(
                str(agent),
                int(seen_ms) / 1000,
                None if offset_ms is None else int(offset_ms) / 1000,
                None if states is None else bytes(states),
            )
            for agent, seen_ms, offset_ms, states, _change in rows
        ]

    def _connect(self) -> Any:
        return side_connection(self.dsn, "fleet sharing", connect_timeout=CONNECT_TIMEOUT)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing to report
                log.debug("closing the fleet-sharing connection failed", exc_info=True)
