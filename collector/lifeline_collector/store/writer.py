"""The write side of ingest: one ``Writer`` per transaction, which may hold many requests (a group
commit), and nothing is answered before that commit.

``batches`` has UNIQUE(agent, boot_id, seq), which is what makes a retried batch a no-op. Each
sample still has its own number for the remote-write cursor: a batch holds the ``sample_count``
numbers from ``first_sample`` on, handed out in commit order from a counter in ``meta``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from lifeline_collector.store.backends import Connection
from lifeline_collector.store.codec import CODEC_NONE, BatchRow, LatestState, SeqTotals, encode_states
from lifeline_wire import Batch, Event

NEXT_SAMPLE = "next_sample"  # the key in ``meta`` of the next sample number
_COUNTER = "SELECT value FROM meta WHERE key = ?"
_COUNTER_LOCKED = _COUNTER + " FOR UPDATE"


def write_agent_latest(db: Connection, agent: str, states: Sequence[LatestState]) -> None:
    db.execute(
        "INSERT INTO agent_latest (agent, states) VALUES (?, ?)"
        " ON CONFLICT (agent) DO UPDATE SET states = excluded.states",
        (agent, encode_states(states)),
    )


class Writer:
    """The write side of one ingest transaction."""

    def __init__(self, db: Connection, *, lock_counter: bool = False) -> None:
        self._db = db
        self._next_sample: int | None = None  # read from meta at the first batch with samples
        self._numbered = False
        # Several writers at once (collectors over PostgreSQL): the counter's row is locked until
        # the commit, so numbers never repeat and grow in commit order (the remote-write cursor).
        self._counter_sql = _COUNTER_LOCKED if lock_counter else _COUNTER

    def _numbers(self, count: int) -> int:
        """The first of ``count`` new sample numbers (numbers grow in commit order)."""
        if self._next_sample is None:
            row = self._db.execute(self._counter_sql, (NEXT_SAMPLE,)).fetchone()
            self._next_sample = 1 if row is None else int(row[0])
        first = self._next_sample
        self._next_sample = first + count
        return first

    def finish(self) -> None:
        """Called once before the commit: keep the sample counter."""
        if self._numbered:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (NEXT_SAMPLE, self._next_sample),
            )

    def insert_batch(self, agent: str, batch: Batch | BatchRow, received_ms: int) -> int | None:
        """The new batch's row id, or None if (agent, boot, seq) was stored before: a duplicate."""
        row = batch if isinstance(batch, BatchRow) else BatchRow.of(batch)
        first = self._numbers(row.sample_count) if row.sample_count else 0
        inserted = self._db.execute(
            "INSERT INTO batches (agent, boot_id, seq, created_ms, received_ms, priority,"
            " first_sample, sample_count, min_ts, max_ts, codec, samples)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            (
                agent,
                row.boot_id,
                row.seq,
                row.created_ms,
                received_ms,
                int(row.priority),
                first,
                row.sample_count,
                row.min_ts,
                row.max_ts,
                row.codec if row.blob is not None else CODEC_NONE,
                row.blob,
            ),
        ).fetchone()
        if inserted is None:
            if row.sample_count:
                self._next_sample = first  # a duplicate takes no numbers
            return None
        self._numbered = self._numbered or bool(row.sample_count)
        self._track_sequence(agent, row.boot_id, row.seq, received_ms)
        return int(inserted[0])

    def _track_sequence(self, agent: str, boot_id: str, seq: int, received_ms: int) -> None:
        row = self._db.execute(
            "SELECT min_seq, max_seq FROM boots WHERE agent = ? AND boot_id = ?", (agent, boot_id)
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO boots (agent, boot_id, min_seq, max_seq, received, jumps, first_ms)"
                " VALUES (?, ?, ?, ?, 1, 0, ?)",
                (agent, boot_id, seq, seq, received_ms),
            )
            return
        low, high = int(row[0]), int(row[1])
        jumps = seq - high - 1 if seq > high + 1 else 0
        self._db.execute(
            "UPDATE boots SET min_seq = ?, max_seq = ?, received = received + 1, jumps = jumps + ?"
            " WHERE agent = ? AND boot_id = ?",
            (min(low, seq), max(high, seq), jumps, agent, boot_id),
        )

    def insert_events(self, agent: str, batch_id: int, events: Iterable[Event]) -> None:
        self._db.executemany(
            "INSERT INTO events (agent, batch, type, ts_ms, attributes) VALUES (?, ?, ?, ?, ?)",
            [
                (agent, batch_id, event.type, event.ts_ms, json.dumps(event.attributes, sort_keys=True))
                for event in events
            ],
        )

    def set_agent_latest(self, agent: str, states: Sequence[LatestState]) -> None:
        """Every series of one agent as it stands after this transaction: one row per agent."""
        write_agent_latest(self._db, agent, states)

    def touch_agent(
        self, agent: str, *, site: str, position: str, seen_ms: int, clock_offset_ms: int
    ) -> None:
        self._db.execute(
            "UPDATE agents SET last_seen_ms = ?, clock_offset_ms = ?,"
            # Registered values win: an agent only fills in what ``agents add`` left empty.
            " site = CASE WHEN site = '' THEN ? ELSE site END,"
            " position = CASE WHEN position = '' THEN ? ELSE position END WHERE id = ?",
            (seen_ms, clock_offset_ms, site, position, agent),
        )

    def seq_totals(self, agent: str) -> SeqTotals:
        row = self._db.execute(
            "SELECT TOTAL(jumps), TOTAL(max_seq - min_seq + 1 - received) FROM boots WHERE agent = ?",
            (agent,),
        ).fetchone()
        return SeqTotals(int(row[0]), int(row[1]))
