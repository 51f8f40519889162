"""The durable spool: every batch is written here before any send and deleted only when acked.

SQLite in WAL mode with ``synchronous=FULL``: with NORMAL, WAL commits survive a crash of the
process but the last ones may roll back on power loss — and a home laptop losing power is one of
the failures Lifeline reports on. FULL costs one fsync per batch (one every few seconds), which
is nothing next to what losing the minutes before a power cut would cost the after-action review.

Bounds, from ``[spool]``: ``max_bytes`` and ``max_age``. Past either, the oldest batches go
(ordinary samples before state changes), counted in ``dropped`` (the self-metric
``lifeline_agent_spool_dropped_batches_total``), with one warning when an episode starts and one
line when the spool is back within its bounds — never one line per batch, never silently.

When the file cannot be written (disk full, I/O error, a directory that cannot be created) the
spool keeps new batches in a bounded memory fallback, still sends them, and moves them to disk
once it can write again. A corrupt file (not a database, failed integrity check, truncated) is
renamed aside to ``<path>.corrupt-<unix time>``, whatever can still be read from it is salvaged,
and a fresh spool starts: the agent carries on. A batch the agent cannot decode any more (written
by an older agent, before the contract grew a limit it breaks) would stop every later one: it is
moved to the file's ``unreadable`` table, counted in ``unreadable`` and logged, never deleted.

``Spool`` is the seam: ``SqliteSpool`` is the real one, ``MemorySpool`` keeps batches in memory
(``run --once``, tests); one test suite runs against both.

Over 500 lines on purpose: the write path and its recoveries (corrupt file, disk full, unreadable
batch, bounds) share one connection and one set of counters; apart, each would hide what the other keeps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import msgspec

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SpoolError
from lifeline_wire import Batch, encode

log = logging.getLogger(__name__)

_batch_decoder = msgspec.json.Decoder(Batch)

SpoolKey = int

DEFAULT_MAX_BYTES = 200_000_000
DEFAULT_MAX_AGE = 7 * 86400.0
# The memory fallback holds at most this much (or max_bytes, if smaller) while the disk fails.
MEMORY_FALLBACK_BYTES = 16_000_000
# How often a spool that could not even open its file tries again.
REOPEN_INTERVAL = 30.0
# An episode of drops ends when the spool is back under this share of its bounds.
SETTLE_RATIO = 0.9
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


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
        """Batches dropped because of the size or age bound since this spool was opened."""

    @property
    def unreadable(self) -> int:
        """Batches set aside since this spool was opened because they no longer decode."""

    def close(self) -> None: ...


def _age_text(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s"


class _Episode:
    """Counts drops and logs once when an episode of drops starts and once when it ends."""

    def __init__(self, what: str, where: str) -> None:
        self.what = what
        self.where = where
        self.dropped = 0
        self._in_episode = 0  # drops in the current episode; 0 = none going on

    def note(self, count: int, why: str) -> None:
        if count <= 0:
            return
        self.dropped += count
        if not self._in_episode:
            log.warning(
                "%s is over its bound: dropping the oldest batches (%s); counted in "
                "lifeline_agent_spool_dropped_batches_total, logged once until it is back within bounds",
                self.what,
                why,
                extra={"spool": self.where},
            )
        self._in_episode += count

    def settle(self) -> None:
        if self._in_episode:
            log.info(
                "%s is back within its bounds; %d batches were dropped in this episode",
                self.what,
                self._in_episode,
                extra={"spool": self.where},
            )
            self._in_episode = 0


class _MemoryLane:
    """Batches in memory, oldest first, bounded in bytes; keys are negative to tell them apart."""

    def __init__(self, max_bytes: int, episode: _Episode) -> None:
        self.max_bytes = max_bytes
        self.episode = episode
        self.items: OrderedDict[SpoolKey, Spooled] = OrderedDict()
        self.ids: dict[tuple[str, int], SpoolKey] = {}
        self.bytes = 0
        self._next = -1

    def add(self, batch: Batch, size: int) -> SpoolKey:
        existing = self.ids.get((batch.boot_id, batch.seq))
        if existing is not None:
            return existing
        key, self._next = self._next, self._next - 1
        self.items[key] = Spooled(key, batch, size)
        self.ids[(batch.boot_id, batch.seq)] = key
        self.bytes += size
        dropped = 0
        while self.bytes > self.max_bytes:
            victims = [k for k, item in self.items.items() if k != key and not item.batch.priority]
            victims = victims or [k for k in self.items if k != key]
            if not victims:
                break
            self.remove(victims[0])
            dropped += 1
        self.episode.note(dropped, f"over {self.max_bytes} bytes")
        return key

    def remove(self, key: SpoolKey) -> Spooled | None:
        item = self.items.pop(key, None)
        if item is not None:
            self.ids.pop((item.batch.boot_id, item.batch.seq), None)
            self.bytes -= item.size
        return item

    def expire(self, cutoff_ms: int) -> int:
        old = [k for k, item in self.items.items() if item.batch.created_ms < cutoff_ms]
        for key in old:
            self.remove(key)
        return len(old)

    def ordered(self, limit: int) -> list[Spooled]:
        items = list(self.items.values())
        return sorted(items, key=lambda item: not item.batch.priority)[:limit]


def is_corrupt(exc: sqlite3.Error) -> bool:
    """SQLite said the file is not a database or is malformed (as opposed to busy, full, I/O)."""
    return getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES


class SqliteSpool:
    def __init__(
        self,
        path: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        *,
        clock: Clock | None = None,
        memory_bytes: int = MEMORY_FALLBACK_BYTES,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.clock = clock or SystemClock()
        self._bound = _Episode("spool", path)
        self._memory = _MemoryLane(min(memory_bytes, max_bytes), _Episode("spool memory fallback", path))
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._bytes = 0
        self._reopen_at = 0.0
        self._disk_failing = False
        # Keys handed out for memory batches that were since moved to disk: memory key → disk key.
        self._moved: dict[SpoolKey, SpoolKey] = {}
        self.set_aside: list[str] = []  # files renamed aside as corrupt (for status and tests)
        self.unreadable = 0  # batches moved to the 'unreadable' table since this spool was opened
        self.salvaged = 0
        with self._lock:
            self._open()

    # -- opening, corruption -------------------------------------------------------------------

    def _open(self) -> None:
        """Open (or create) the file; a corrupt one is set aside and replaced. Never raises."""
        try:
            self._db = self._connect()
            return
        except sqlite3.Error as exc:
            if not is_corrupt(exc):
                self._degrade(f"cannot open: {exc}")
                return
            reason = str(exc)
        except OSError as exc:
            self._degrade(f"cannot create its directory: {exc.strerror or exc}")
            return
        self._replace_corrupt(reason)

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL, not NORMAL: a WAL commit must survive power loss, not only a crash of the process.
            db.execute("PRAGMA synchronous=FULL")
            rows = db.execute("PRAGMA integrity_check").fetchall()
            if rows != [("ok",)]:
                damage = sqlite3.DatabaseError(
                    "integrity check failed: " + "; ".join(str(row[0]) for row in rows[:3])
                )
                damage.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
                raise damage
            db.execute(
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
            db.execute(
                """CREATE TABLE IF NOT EXISTS unreadable (
                       id INTEGER PRIMARY KEY AUTOINCREMENT,
                       boot_id TEXT NOT NULL,
                       seq INTEGER NOT NULL,
                       created_ms INTEGER NOT NULL,
                       body BLOB NOT NULL,
                       reason TEXT NOT NULL,
                       parked_ms INTEGER NOT NULL)"""
            )
            db.execute("CREATE INDEX IF NOT EXISTS batches_send_order ON batches (priority DESC, id)")
            db.execute("CREATE INDEX IF NOT EXISTS batches_created ON batches (created_ms)")
            self._bytes = int(db.execute("SELECT COALESCE(SUM(size), 0) FROM batches").fetchone()[0])
        except BaseException:
            db.close()
            raise
        return db

    def _replace_corrupt(self, reason: str) -> None:
        """Salvage what still reads, rename the file (and its WAL) aside, start a fresh spool."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        salvaged = self._salvage()
        aside = f"{self.path}.corrupt-{int(time.time())}"
        for n in range(1, 1000):
            if not os.path.exists(aside):
                break
            aside = f"{self.path}.corrupt-{int(time.time())}-{n}"
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
        except OSError as exc:
            self._degrade(f"is corrupt ({reason}) and cannot be renamed aside: {exc.strerror or exc}")
            for batch in salvaged:
                self._memory.add(batch, len(encode(batch)))
            return
        self.set_aside.append(aside)
        log.error(
            "spool %s is corrupt (%s): renamed to %s, %d batches salvaged; starting a fresh spool",
            self.path,
            reason,
            aside,
            len(salvaged),
            extra={"spool": self.path},
        )
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._degrade(f"cannot create a fresh spool: {exc}")
            for batch in salvaged:
                self._memory.add(batch, len(encode(batch)))
            return
        for batch in salvaged:
            self._insert(self._db, batch, encode(batch))
        self.salvaged += len(salvaged)

    def _salvage(self) -> list[Batch]:
        """Every batch that can still be read and decoded from the corrupt file."""
        out: list[Batch] = []
        if not os.path.exists(self.path):
            return out
        try:
            db = sqlite3.connect(self.path, check_same_thread=False)
        except sqlite3.Error:
            return out
        try:
            cursor = db.execute("SELECT body FROM batches ORDER BY id")
            while True:
                try:
                    row = cursor.fetchone()
                except sqlite3.Error:
                    break
                if row is None:
                    break
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError, TypeError):
                    out.append(_batch_decoder.decode(row[0]))
        except sqlite3.Error:
            pass
        finally:
            db.close()
        return out

    def _degrade(self, reason: str) -> None:
        """The file cannot be used: keep batches in memory (bounded) and try the file again later."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._reopen_at = time.monotonic() + REOPEN_INTERVAL
        if not self._disk_failing:
            log.error(
                "spool %s %s; keeping new batches in memory (at most %d bytes) and retrying",
                self.path,
                reason,
                self._memory.max_bytes,
                extra={"spool": self.path},
            )
        self._disk_failing = True

    def _write_failed(self, exc: sqlite3.Error) -> None:
        if is_corrupt(exc):
            self._replace_corrupt(str(exc))
            return
        if not self._disk_failing:
            log.error(
                "spool %s cannot be written (%s); keeping new batches in memory (at most %d bytes)",
                self.path,
                exc,
                self._memory.max_bytes,
                extra={"spool": self.path},
            )
        self._disk_failing = True

    def _recover(self) -> None:
        """After a failure: reopen the file when due, and move memory batches to disk once it works."""
        if self._db is None:
            if time.monotonic() < self._reopen_at:
                return
            self._open()
            if self._db is None:
                return
        if not self._memory.items:
            return
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            moved: dict[SpoolKey, SpoolKey] = {}
            for key, item in self._memory.items.items():
                moved[key] = self._insert(db, item.batch, encode(item.batch))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            self._write_failed(exc)
            return
        for key in moved:
            self._memory.remove(key)
        self._moved.update(moved)
        log.info("spool %s writable again: %d batches moved from memory to disk", self.path, len(moved))
        self._disk_failing = False

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")

    def _recount(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._bytes = int(
                    self._db.execute("SELECT COALESCE(SUM(size), 0) FROM batches").fetchone()[0]
                )

    # -- the Spool contract --------------------------------------------------------------------

    def append(self, batch: Batch) -> SpoolKey:
        body = encode(batch)
        with self._lock:
            self._recover()
            db = self._db
            if db is not None and not self._memory.items:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    key = self._insert(db, batch, body)
                    dropped_age = self._expire(db)
                    dropped_size = self._enforce_size(db, keep=key)
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(db)
                    self._recount()
                    self._write_failed(exc)
                else:
                    self._disk_failing = False
                    self._bound.note(dropped_age, f"older than spool.max_age = {_age_text(self.max_age)}")
                    self._bound.note(dropped_size, f"over spool.max_bytes = {self.max_bytes} bytes")
                    return key
            # The disk failed (or still holds older failures in memory): keep order, keep it bounded.
            self._memory.expire(self._cutoff_ms())
            return self._memory.add(batch, len(body))

    def _insert(self, db: sqlite3.Connection, batch: Batch, body: bytes) -> SpoolKey:
        cur = db.execute(
            "INSERT OR IGNORE INTO batches (boot_id, seq, priority, created_ms, size, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (batch.boot_id, batch.seq, int(batch.priority), batch.created_ms, len(body), body),
        )
        if cur.rowcount:
            self._bytes += len(body)
        row = db.execute(
            "SELECT id FROM batches WHERE boot_id = ? AND seq = ?", (batch.boot_id, batch.seq)
        ).fetchone()
        return int(row[0])

    def _cutoff_ms(self) -> int:
        return now_ms(self.clock) - int(self.max_age * 1000)

    def _expire(self, db: sqlite3.Connection) -> int:
        rows = db.execute(
            "DELETE FROM batches WHERE created_ms < ? RETURNING size", (self._cutoff_ms(),)
        ).fetchall()
        self._bytes -= sum(int(row[0]) for row in rows)
        return len(rows)

    def _enforce_size(self, db: sqlite3.Connection, keep: int) -> int:
        dropped = 0
        while self._bytes > self.max_bytes:
            row = db.execute(
                "SELECT id, size FROM batches WHERE id != ? ORDER BY priority, id LIMIT 1", (keep,)
            ).fetchone()
            if row is None:
                break
            db.execute("DELETE FROM batches WHERE id = ?", (row[0],))
            self._bytes -= int(row[1])
            dropped += 1
        return dropped

    def pending(self, limit: int) -> list[Spooled]:
        with self._lock:
            out: list[Spooled] = []
            db = self._db
            if db is not None:
                try:
                    out = self._readable(db, limit)
                except sqlite3.Error as exc:
                    if is_corrupt(exc):
                        self._replace_corrupt(str(exc))
                        return self._pending_after_recovery(limit)
                    raise SpoolError(self.path, str(exc)) from exc
            if self._memory.items:
                merged = out + self._memory.ordered(limit)
                out = sorted(merged, key=lambda item: not item.batch.priority)[:limit]
            return out

    def _pending_after_recovery(self, limit: int) -> list[Spooled]:
        db = self._db
        out: list[Spooled] = []
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                out = self._readable(db, limit)
        merged = out + self._memory.ordered(limit)
        return sorted(merged, key=lambda item: not item.batch.priority)[:limit]

    def _readable(self, db: sqlite3.Connection, limit: int) -> list[Spooled]:
        """The next ``limit`` batches in send order; ones that no longer decode are set aside."""
        while True:
            rows = db.execute(
                "SELECT id, body, size FROM batches ORDER BY priority DESC, id LIMIT ?", (limit,)
            ).fetchall()
            out: list[Spooled] = []
            unreadable: list[tuple[int, str]] = []
            for key, body, size in rows:
                try:
                    out.append(Spooled(int(key), _batch_decoder.decode(body), int(size)))
                except msgspec.DecodeError as exc:  # ValidationError is one too
                    unreadable.append((int(key), str(exc)))
            if not unreadable:
                return out
            self._set_unreadable_aside(db, unreadable)

    def _set_unreadable_aside(self, db: sqlite3.Connection, unreadable: list[tuple[int, str]]) -> None:
        parked_ms = now_ms(self.clock)
        try:
            db.execute("BEGIN IMMEDIATE")
            for key, reason in unreadable:
                row = db.execute(
                    "DELETE FROM batches WHERE id = ? RETURNING boot_id, seq, created_ms, size, body", (key,)
                ).fetchone()
                if row is None:
                    continue
                boot_id, seq, created_ms, size, body = row
                db.execute(
                    "INSERT INTO unreadable (boot_id, seq, created_ms, body, reason, parked_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (boot_id, seq, created_ms, body, reason, parked_ms),
                )
                self._bytes -= int(size)
            db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback(db)
            self._recount()
            raise
        self.unreadable += len(unreadable)
        log.error(
            "spool %s: %d batches cannot be read back by this agent (%s); kept in the file's "
            "'unreadable' table and not sent, so later batches are not held up",
            self.path,
            len(unreadable),
            unreadable[0][1],
            extra={"spool": self.path},
        )

    def ack(self, keys: list[SpoolKey]) -> None:
        if not keys:
            return
        with self._lock:
            disk: list[SpoolKey] = []
            for key in keys:
                if key < 0:
                    if self._memory.remove(key) is None and key in self._moved:
                        disk.append(self._moved.pop(key))
                else:
                    disk.append(key)
            db = self._db
            if disk and db is not None:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    for key in disk:
                        row = db.execute("DELETE FROM batches WHERE id = ? RETURNING size", (key,)).fetchone()
                        if row is not None:
                            self._bytes -= int(row[0])
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(db)
                    self._recount()
                    if is_corrupt(exc):
                        self._replace_corrupt(str(exc))
                        return
                    raise SpoolError(self.path, str(exc)) from exc
            if self._within_bounds():
                self._bound.settle()
                self._memory.episode.settle()

    def _within_bounds(self) -> bool:
        if self._bytes + self._memory.bytes > SETTLE_RATIO * self.max_bytes:
            return False
        if self._db is None:
            return True
        try:
            oldest = self._db.execute("SELECT MIN(created_ms) FROM batches").fetchone()[0]
        except sqlite3.Error:
            return False
        return oldest is None or now_ms(self.clock) - int(oldest) < SETTLE_RATIO * self.max_age * 1000

    def depth(self) -> int:
        with self._lock:
            count = len(self._memory.items)
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    count += int(self._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
            return count

    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes + self._memory.bytes

    @property
    def dropped(self) -> int:
        return self._bound.dropped + self._memory.episode.dropped

    @property
    def degraded(self) -> bool:
        """True while batches are kept in memory because the file cannot be written."""
        return self._disk_failing

    def close(self) -> None:
        with self._lock:
            if self._memory.items:
                self._reopen_at = 0.0
                self._recover()
            if self._memory.items:
                log.error(
                    "spool %s closing with %d batches only in memory (the file could not be written): "
                    "they are lost",
                    self.path,
                    len(self._memory.items),
                )
            if self._db is not None:
                self._db.close()
                self._db = None


class MemorySpool:
    """The same contract in memory: nothing survives the process (``--once``, tests)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.max_age = max_age
        self.clock = clock or SystemClock()
        self._bound = _Episode("spool", "memory")
        self._lane = _MemoryLane(max_bytes, self._bound)
        self._lock = threading.Lock()

    def append(self, batch: Batch) -> SpoolKey:
        with self._lock:
            expired = self._lane.expire(now_ms(self.clock) - int(self.max_age * 1000))
            self._bound.note(expired, f"older than spool.max_age = {_age_text(self.max_age)}")
            return -self._lane.add(batch, len(encode(batch)))

    def pending(self, limit: int) -> list[Spooled]:
        with self._lock:
            return [Spooled(-item.key, item.batch, item.size) for item in self._lane.ordered(limit)]

    def ack(self, keys: list[SpoolKey]) -> None:
        with self._lock:
            for key in keys:
                self._lane.remove(-key)
            if self._lane.bytes <= SETTLE_RATIO * self._lane.max_bytes:
                self._bound.settle()

    def depth(self) -> int:
        with self._lock:
            return len(self._lane.items)

    def size_bytes(self) -> int:
        with self._lock:
            return self._lane.bytes

    @property
    def dropped(self) -> int:
        return self._bound.dropped

    @property
    def unreadable(self) -> int:
        return 0  # batches are kept decoded: nothing to read back

    def close(self) -> None:
        pass


def open_spool(config: AgentConfig) -> SqliteSpool:
    """The spool ``[spool]`` describes: its path and both of its bounds."""
    return SqliteSpool(config.spool_path, config.spool.max_bytes, config.spool.max_age)
