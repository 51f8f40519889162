"""The durable spool: every batch is written here before any send and deleted only when acked.

SQLite in WAL mode with ``synchronous=FULL``: with NORMAL, WAL commits survive a crash of the
process but the last ones may roll back on power loss — and a home laptop losing power is one of
the failures Lifeline reports on. FULL costs one fsync per batch (one every few seconds).

``Spool`` is the seam: ``SqliteSpool`` is the real one, ``MemorySpool`` keeps batches in memory
(``run --once``, tests); one test suite runs against both. Issue 5 adds age bounds and
corrupt-file handling behind the same Protocol.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Protocol

import msgspec

from lifeline_agent.errors import SpoolError
from lifeline_wire import Batch, encode

log = logging.getLogger(__name__)

_batch_decoder = msgspec.json.Decoder(Batch)

SpoolKey = int


@dataclass(frozen=True, slots=True)
class Spooled:
    key: SpoolKey
    batch: Batch
    size: int


class Spool(Protocol):
    def append(self, batch: Batch) -> SpoolKey:
        """Store ``batch`` durably; return its key. Appending the same (boot_id, seq) twice is a no-op."""

    def pending(self, limit: int) -> list[Spooled]:
        """Up to ``limit`` batches to send: priority batches first, then oldest first."""

    def ack(self, keys: list[SpoolKey]) -> None:
        """Delete batches the collector took (accepted or duplicate) or rejected for good."""

    def depth(self) -> int:
        """Batches waiting."""

    def size_bytes(self) -> int:
        """Bytes of batches waiting (encoded size)."""

    @property
    def dropped(self) -> int:
        """Batches dropped because of the size bound since this spool was opened."""

    def close(self) -> None: ...


class _Bound:
    """The size bound: past ``max_bytes`` the oldest non-priority batches go, counted, warned once."""

    def __init__(self, max_bytes: int, where: str) -> None:
        self.max_bytes = max_bytes
        self.where = where
        self.dropped = 0
        self._warned = False

    def note(self, count: int) -> None:
        if count <= 0:
            return
        self.dropped += count
        if not self._warned:
            self._warned = True
            log.warning(
                "spool is over its bound of %d bytes: dropping the oldest batches "
                "(counted in lifeline_agent_spool_dropped_batches_total; this is logged once)",
                self.max_bytes,
                extra={"spool": self.where},
            )


class SqliteSpool:
    def __init__(self, path: str, max_bytes: int = 200_000_000) -> None:
        self.path = path
        self._bound = _Bound(max_bytes, path)
        self._lock = threading.Lock()
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS batches (
                       id INTEGER PRIMARY KEY AUTOINCREMENT,
                       boot_id TEXT NOT NULL,
                       seq INTEGER NOT NULL,
                       priority INTEGER NOT NULL,
                       created_ms INTEGER NOT NULL,
                       size INTEGER NOT NULL,
                       body BLOB NOT NULL,
                       UNIQUE (boot_id, seq))"""
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS batches_send_order ON batches (priority DESC, id)")
            self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM batches").fetchone()[0])
        except sqlite3.Error as exc:
            raise SpoolError(path, str(exc)) from exc

    def append(self, batch: Batch) -> SpoolKey:
        body = encode(batch)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO batches (boot_id, seq, priority, created_ms, size, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (batch.boot_id, batch.seq, int(batch.priority), batch.created_ms, len(body), body),
                )
                if cur.rowcount:
                    self._bytes += len(body)
                key = self._db.execute(
                    "SELECT id FROM batches WHERE boot_id = ? AND seq = ?", (batch.boot_id, batch.seq)
                ).fetchone()[0]
                dropped = self._enforce_bound(keep=key)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._bytes = int(
                    self._db.execute("SELECT COALESCE(SUM(size), 0) FROM batches").fetchone()[0]
                )
                raise SpoolError(self.path, str(exc)) from exc
        self._bound.note(dropped)
        return int(key)

    def _enforce_bound(self, keep: int) -> int:
        dropped = 0
        while self._bytes > self._bound.max_bytes:
            row = self._db.execute(
                "SELECT id, size FROM batches WHERE id != ? ORDER BY priority, id LIMIT 1", (keep,)
            ).fetchone()
            if row is None:
                break
            self._db.execute("DELETE FROM batches WHERE id = ?", (row[0],))
            self._bytes -= int(row[1])
            dropped += 1
        return dropped

    def pending(self, limit: int) -> list[Spooled]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body, size FROM batches ORDER BY priority DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [Spooled(int(key), _batch_decoder.decode(body), int(size)) for key, body, size in rows]

    def ack(self, keys: list[SpoolKey]) -> None:
        if not keys:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for key in keys:
                    row = self._db.execute(
                        "DELETE FROM batches WHERE id = ? RETURNING size", (key,)
                    ).fetchone()
                    if row is not None:
                        self._bytes -= int(row[0])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolError(self.path, str(exc)) from exc

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def dropped(self) -> int:
        return self._bound.dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemorySpool:
    """The same contract in memory: nothing survives the process (``--once``, tests)."""

    def __init__(self, max_bytes: int = 200_000_000) -> None:
        self._bound = _Bound(max_bytes, "memory")
        self._items: dict[SpoolKey, Spooled] = {}
        self._ids: dict[tuple[str, int], SpoolKey] = {}
        self._next = 1
        self._lock = threading.Lock()

    def append(self, batch: Batch) -> SpoolKey:
        with self._lock:
            existing = self._ids.get((batch.boot_id, batch.seq))
            if existing is not None:
                return existing
            key, self._next = self._next, self._next + 1
            self._items[key] = Spooled(key, batch, len(encode(batch)))
            self._ids[(batch.boot_id, batch.seq)] = key
            dropped = 0
            while self.size_bytes_locked() > self._bound.max_bytes:
                victims = sorted(
                    (k for k in self._items if k != key), key=lambda k: (self._items[k].batch.priority, k)
                )
                if not victims:
                    break
                self._remove(victims[0])
                dropped += 1
        self._bound.note(dropped)
        return key

    def _remove(self, key: SpoolKey) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._ids.pop((item.batch.boot_id, item.batch.seq), None)

    def size_bytes_locked(self) -> int:
        return sum(item.size for item in self._items.values())

    def pending(self, limit: int) -> list[Spooled]:
        with self._lock:
            order = sorted(self._items, key=lambda k: (not self._items[k].batch.priority, k))
            return [self._items[k] for k in order[:limit]]

    def ack(self, keys: list[SpoolKey]) -> None:
        with self._lock:
            for key in keys:
                self._remove(key)

    def depth(self) -> int:
        with self._lock:
            return len(self._items)

    def size_bytes(self) -> int:
        with self._lock:
            return self.size_bytes_locked()

    @property
    def dropped(self) -> int:
        return self._bound.dropped

    def close(self) -> None:
        pass
