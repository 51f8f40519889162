"""The collector's SQLite store (WAL): agents and their hashed tokens, batches with their samples,
events, the latest value of every series, and the alert history.

A batch is one row: its samples are one compact blob (the JSON the agent sent, compressed with
LZ4), not one indexed row per sample. ``codec`` says which form: 1 the JSON array of samples (wire
version 1), 2 ``[samples, series]`` (version 2's series form, kept as sent); ``unpack_samples``
reads both into the same samples in the same order. ``batches`` has UNIQUE(agent, boot_id, seq), which is
what makes a retried batch a no-op. Each sample still has its own number for the remote-write
cursor: a batch holds the ``sample_count`` numbers from ``first_sample`` on, handed out in commit
order from a counter in ``meta``. Ingest commits many requests in one transaction (``writer()``),
and nothing is answered before that commit. Tokens are stored only as SHA-256 hashes.

The latest value of every series of an agent is one row too (``agent_latest``: the agent's whole
series state, msgpack + LZ4), rewritten once per commit that moves it, instead of one upserted
row per series; a restarted collector reads it back exactly.

The same store runs on PostgreSQL when its location is a ``postgresql://`` DSN
(``backends``): several collectors then share one database, and (agent, boot, seq) stays
unique across them.

Older files are converted when opened (``_migrate``): schema 2 stored one row per sample in
``samples`` (each sample keeps its number, so a remote-write cursor saved before stays valid), and
schemas 2 and 3 kept one ``latest`` row per series, keyed through a ``series`` table (they become
each agent's ``agent_latest`` row, and both tables go).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import math
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cramjam
import msgspec

from lifeline_collector.alerting.errors import UnknownAlertError, UnknownSilenceError
from lifeline_collector.alerting.model import Alert, AlertState
from lifeline_collector.alerting.silences import Ack, Matcher, Silence
from lifeline_collector.errors import DuplicateAgentError, StoreError, UnknownAgentError
from lifeline_collector.store.backends import (
    DEFAULT_POOL_SIZE,
    Backend,
    Connection,
    PostgresBackend,
    SqliteBackend,
    is_postgres_dsn,
    safe_dsn,
)
from lifeline_collector.store.schema import (
    SCHEMA_VERSION,
    SQLITE_BATCH_COLUMNS,
    SQLITE_INDEXES,
    SQLITE_SCHEMA,
)
from lifeline_wire import Batch, Event, Sample, SeriesPoints
from lifeline_wire.schema import MAX_SAMPLES_PER_BATCH, every_sample

CODEC_NONE = 0  # no samples
CODEC_JSON_LZ4 = 1  # the JSON array of wire samples, LZ4 block with its size in front
CODEC_SERIES_LZ4 = 2  # JSON ``[samples, series]`` of a batch in the series form, LZ4 as above
NEXT_SAMPLE = "next_sample"


def _int(value: object) -> int:
    if isinstance(value, int | float | str):
        return int(value)
    raise StoreError(f"expected a number from the store, got {value!r}")


def _float(value: object) -> float:
    """SQLite stores NaN as NULL: read it back as NaN."""
    if value is None:
        return math.nan
    if isinstance(value, int | float | str):
        return float(value)
    raise StoreError(f"expected a number from the store, got {value!r}")


def _blob(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise StoreError(f"expected a blob from the store, got {type(value).__name__}")


def _by_ts(row: tuple[str, int, float]) -> int:
    return row[1]


def _convert_sample_rows(db: sqlite3.Connection) -> None:
    """Schema 2's sample rows into batch blobs. A sample keeps its row id as its number, so a
    remote-write cursor saved before stays valid (a batch whose rows retention had thinned out
    keeps the numbers up to its last row). Samples whose batch row was pruned get a batch row of
    their own (boot ``migrated``, seq = the old batch id): nothing is lost."""
    rows = db.execute(
        "SELECT p.batch, p.rowid, s.agent, s.name, s.labels, p.value, p.ts_ms FROM samples p"
        " JOIN series s ON s.id = p.series ORDER BY p.batch, p.rowid"
    )
    next_sample = 1
    for batch_id, group in itertools.groupby(rows, key=lambda row: row[0]):
        members = list(group)
        samples = [
            Sample(str(n), _float(v), _int(ts), json.loads(str(lk))) for _, _, _, n, lk, v, ts in members
        ]
        count = len(samples)
        last = max(_int(member[1]) for member in members)
        first = last - count + 1
        low, high = min(s.ts_ms for s in samples), max(s.ts_ms for s in samples)
        blob = pack_samples(_encoder.encode(samples))
        changed = db.execute(
            "UPDATE batches SET first_sample = ?, sample_count = ?, min_ts = ?, max_ts = ?, codec = ?,"
            " samples = ? WHERE id = ?",
            (first, count, low, high, CODEC_JSON_LZ4, blob, batch_id),
        ).rowcount
        if changed == 0:  # the batch row was pruned before its samples
            db.execute(
                "INSERT INTO batches (agent, boot_id, seq, created_ms, received_ms, priority, first_sample,"
                " sample_count, min_ts, max_ts, codec, samples)"
                " VALUES (?, 'migrated', ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                (str(members[0][2]), batch_id, low, low, first, count, low, high, CODEC_JSON_LZ4, blob),
            )
        next_sample = max(next_sample, last + 1)
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        (NEXT_SAMPLE, next_sample),
    )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


LABELS_KEY_CACHE_SIZE = 16_384
LABELS_KEY_TEXT_LIMIT = 512  # characters of a cached label set's text: real ones are a few dozen
_labels_keys: dict[tuple[tuple[str, str], ...], str] = {}


def labels_key(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set (sorted JSON), used as part of a series' identity.

    Every ingested sample needs one, and a fleet repeats the same few hundred label sets, so the
    text is cached by the labels as sent (bounded in entries and in size: agents choose label
    values, and a rejected or one-off long label set must not stay in memory).
    """
    items = tuple(labels.items())
    key = _labels_keys.get(items)
    if key is None:
        key = json.dumps(labels, sort_keys=True, separators=(",", ":"))
        if len(key) > LABELS_KEY_TEXT_LIMIT:
            return key
        if len(_labels_keys) >= LABELS_KEY_CACHE_SIZE:
            _labels_keys.clear()
        _labels_keys[items] = key
    return key


@dataclass(frozen=True, slots=True)
class AgentRow:
    id: str
    site: str
    position: str
    created_ms: int
    revoked_ms: int | None
    last_seen_ms: int | None
    clock_offset_ms: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True, slots=True)
class LatestRow:
    agent: str
    name: str
    labels: str  # labels_key
    value: float
    ts_ms: int
    zero_streak: int


@dataclass(frozen=True, slots=True)
class SeqTotals:
    jumps: int  # sequence numbers skipped when they were first seen (only grows)
    missing: int  # sequence numbers not received yet (shrinks when late batches arrive)


_AGENT_COLUMNS = "id, site, position, created_ms, revoked_ms, last_seen_ms, clock_offset_ms"
_samples_decoder = msgspec.json.Decoder(list[Sample])
_both_decoder = msgspec.json.Decoder(tuple[list[Sample], list[SeriesPoints]])
_encoder = msgspec.json.Encoder()
# One agent's latest series: (name, labels_key, value, ts_ms, zero_streak) each (msgpack keeps NaN).
LatestState = tuple[str, str, float, int, int]
_states_encoder = msgspec.msgpack.Encoder()
_states_decoder = msgspec.msgpack.Decoder(list[LatestState])


def pack_samples(samples_json: bytes | memoryview | msgspec.Raw) -> bytes:
    """The blob of a batch's samples: their JSON array, LZ4-compressed (size in front)."""
    return bytes(cramjam.lz4.compress_block(samples_json))


def pack_series(
    samples_json: bytes | memoryview | msgspec.Raw, series_json: bytes | memoryview | msgspec.Raw
) -> bytes:
    """The blob of a batch in the series form (``CODEC_SERIES_LZ4``): ``[samples, series]`` as sent."""
    return bytes(cramjam.lz4.compress_block(b"".join((b"[", samples_json, b",", series_json, b"]"))))


def unpack_samples(codec: int, blob: bytes | None) -> list[Sample]:
    """The samples of one stored batch in their canonical order (``Batch.every_sample``): the
    samples as sent, then each series' points, series by series. Sample numbers follow it."""
    if codec == CODEC_NONE or blob is None:
        return []
    if codec not in (CODEC_JSON_LZ4, CODEC_SERIES_LZ4):
        raise StoreError(f"unknown sample codec {codec} (a newer collector wrote this store?)")
    try:
        text = bytes(cramjam.lz4.decompress_block(blob))
        if codec == CODEC_JSON_LZ4:
            return _samples_decoder.decode(text)
        samples, series = _both_decoder.decode(text)
    except (cramjam.DecompressionError, msgspec.DecodeError) as exc:
        raise StoreError(f"a stored batch's samples are unreadable: {exc}") from None
    return every_sample(samples, series)


def _set_agent_latest(db: Connection, agent: str, states: Sequence[LatestState]) -> None:
    blob = bytes(cramjam.lz4.compress_block(_states_encoder.encode(states)))
    db.execute(
        "INSERT INTO agent_latest (agent, states) VALUES (?, ?)"
        " ON CONFLICT (agent) DO UPDATE SET states = excluded.states",
        (agent, blob),
    )


def _convert_latest_rows(db: sqlite3.Connection) -> None:
    """Schemas 2 and 3 kept each series' newest value in its own ``latest`` row: they become one
    ``agent_latest`` row per agent (an agent that already has one keeps it: it is newer)."""
    rows = db.execute(
        "SELECT s.agent, s.name, s.labels, l.value, l.ts_ms, l.zero_streak FROM latest l"
        " JOIN series s ON s.id = l.series"
        " WHERE s.agent NOT IN (SELECT agent FROM agent_latest) ORDER BY s.agent, s.id"
    ).fetchall()
    for agent, group in itertools.groupby(rows, key=lambda row: row[0]):
        states = [(str(n), str(lk), _float(v), _int(ts), _int(z)) for _, n, lk, v, ts, z in group]
        _set_agent_latest(db, str(agent), states)


class BatchHead(Protocol):
    """What a stored batch takes from a decoded one, besides its samples."""

    @property
    def boot_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def created_ms(self) -> int: ...
    @property
    def priority(self) -> bool: ...
    @property
    def events(self) -> list[Event]: ...


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One batch as the store keeps it: its identity, and its samples as one blob."""

    boot_id: str
    seq: int
    created_ms: int
    priority: bool
    sample_count: int
    min_ts: int | None
    max_ts: int | None
    blob: bytes | None  # pack_samples() or pack_series(), as ``codec`` says; None without samples
    events: Sequence[Event] = ()
    codec: int = CODEC_JSON_LZ4

    @classmethod
    def make(
        cls,
        head: BatchHead,
        samples_json: bytes | memoryview | msgspec.Raw,
        series_json: bytes | memoryview | msgspec.Raw | None,
        count: int,
        min_ts: int | None,
        max_ts: int | None,
    ) -> BatchRow:
        """From a batch (or the same fields of a faster decode) whose measurements are already
        JSON: ingest keeps the bytes the agent sent — the samples array alone, or with the series
        of the series form (``series_json``; then ``CODEC_SERIES_LZ4``)."""
        if series_json is None:
            blob, codec = (pack_samples(samples_json) if count else None), CODEC_JSON_LZ4
        else:
            blob, codec = (pack_series(samples_json, series_json) if count else None), CODEC_SERIES_LZ4
        return cls(
            head.boot_id,
            head.seq,
            head.created_ms,
            head.priority,
            count,
            min_ts,
            max_ts,
            blob,
            head.events,
            codec,
        )

    @classmethod
    def of(cls, batch: Batch) -> BatchRow:
        stamps = [sample.ts_ms for sample in batch.every_sample()]
        return cls.make(
            batch,
            _encoder.encode(batch.samples),
            _encoder.encode(batch.series) if batch.series else None,
            len(stamps),
            min(stamps, default=None),
            max(stamps, default=None),
        )


def _open_postgres(dsn: str, pool_size: int) -> PostgresBackend:
    """Connect the pool and bring the schema up to date (``migrate``), or say why not."""
    where = safe_dsn(dsn)
    try:
        backend = PostgresBackend(dsn, pool_size)
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        raise StoreError(f"cannot open store {where}: {exc}") from None
    except Exception as exc:  # psycopg's and the pool's errors, whatever the failure
        raise StoreError(f"cannot open store {where}: {type(exc).__name__}: {exc}") from None
    try:
        backend.migrate()
    except backend.errors as exc:
        backend.close()
        raise StoreError(f"cannot migrate store {where}: {exc}") from None
    return backend


def _store_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot write (full, read-only, an I/O error, corrupt) rather
    than that one statement was refused (a constraint, a duplicate agent): only trouble makes
    /healthz answer 503, so a load balancer never drops a collector over one refused write."""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return True
    return any(cls.__name__ == "OperationalError" for cls in type(exc).__mro__)  # psycopg's too


class Store:
    def __init__(self, path: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        """``path``: a SQLite file, or a PostgreSQL DSN (``postgresql://…``) with a pool of
        ``pool_size`` connections. Either way the schema is brought up to date here."""
        self.path = path
        # Why the last write failed, until a write of ingest succeeds again (``ping``).
        self.failing: str | None = None
        # SQLite: one connection, used by the event loop; the lock guards tests and CLI use from threads.
        self._lock = threading.RLock()
        self._backend: Backend
        if is_postgres_dsn(path):
            self._backend = _open_postgres(path, pool_size)
            return
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit is on disk (the WAL synced) before ingest answers it, and an agent
            # deletes what was answered; NORMAL could lose the last commits on a power cut. A group
            # commit pays one sync for every request in it (bench/collector_ingest.py).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SQLITE_SCHEMA)
            self._migrate()
            self._db.executescript(SQLITE_INDEXES)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except OSError as exc:
            raise StoreError(f"cannot open store {path}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from None
        self._backend = SqliteBackend(self._db)

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What the database raises (inside ``_tx``, before it becomes a StoreError)."""
        return self._backend.errors

    def schema_version(self) -> int:
        with self._lock:
            try:
                return self._backend.schema_version()
            except self._backend.errors as exc:
                raise StoreError(f"query failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._backend.close()

    def _migrate(self) -> None:
        """Schema 2 → 3: each batch's sample rows become its blob, every sample keeping its number.
        Schemas 2 and 3 → 4: the per-series ``latest`` rows become one ``agent_latest`` row per agent."""
        db = self._db
        columns = {str(row[1]) for row in db.execute("PRAGMA table_info(batches)")}
        tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"samples", "series", "latest"} & tables and all(
            name in columns for name, _ in SQLITE_BATCH_COLUMNS
        ):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, declaration in SQLITE_BATCH_COLUMNS:
                if name not in columns:
                    db.execute(f"ALTER TABLE batches ADD COLUMN {name} {declaration}")
            if "samples" in tables:
                _convert_sample_rows(db)
                db.execute("DROP TABLE samples")
            if "latest" in tables:
                _convert_latest_rows(db)
                db.execute("DROP TABLE latest")
            if "series" in tables:
                db.execute("DROP TABLE series")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _tx(self, *, ingest: bool = False) -> Iterator[Connection]:
        backend = self._backend
        with self._lock:
            try:
                db = backend.begin()
            except backend.errors as exc:
                raise StoreError(f"store busy: {exc}") from None
            try:
                yield db
                if not ingest and backend.name == "postgresql":
                    # Other collectors poll this (data_version) to reload agents, silences, acks.
                    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'changes'")
            except BaseException as exc:
                backend.rollback(db)
                backend.release(db)
                if _store_trouble(exc):
                    self.failing = str(exc)
                raise
            else:
                try:
                    backend.commit(db)
                except backend.errors as exc:
                    backend.rollback(db)
                    self.failing = f"commit failed: {exc}"
                    raise StoreError(self.failing) from None
                finally:
                    backend.release(db)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                with self._backend.connection() as db:
                    return list(db.execute(sql, params))
            except self._backend.errors as exc:
                raise StoreError(f"query failed: {exc}") from None

    # --- agents and tokens -------------------------------------------------------------------

    def add_agent(self, agent_id: str, *, site: str = "", position: str = "", now_ms: int) -> str:
        """Register an agent (or re-issue a revoked one) and return its token; only the hash is kept."""
        token = secrets.token_urlsafe(32)
        with self._tx() as db:
            row = db.execute("SELECT revoked_ms FROM agents WHERE id = ?", (agent_id,)).fetchone()
            if row is not None and row[0] is None:
                raise DuplicateAgentError(agent_id)
            db.execute(
                "INSERT INTO agents (id, site, position, token_hash, created_ms) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET site = excluded.site, position = excluded.position,"
                " token_hash = excluded.token_hash, created_ms = excluded.created_ms, revoked_ms = NULL",
                (agent_id, site, position, hash_token(token), now_ms),
            )
        return token

    def revoke_agent(self, agent_id: str, *, now_ms: int) -> None:
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE agents SET token_hash = NULL, revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (now_ms, agent_id),
            )
            if cursor.rowcount == 0:
                raise UnknownAgentError(agent_id)

    def agents(self, *, include_revoked: bool = False) -> list[AgentRow]:
        where = "" if include_revoked else " WHERE revoked_ms IS NULL"
        rows = self._query(f"SELECT {_AGENT_COLUMNS} FROM agents{where} ORDER BY id")  # noqa: S608
        return [AgentRow(*row) for row in rows]  # type: ignore[arg-type]

    def agent(self, agent_id: str) -> AgentRow | None:
        rows = self._query(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,))  # noqa: S608
        return AgentRow(*rows[0]) if rows else None  # type: ignore[arg-type]

    def token_hashes(self) -> list[tuple[str, str]]:
        """(id, token hash) of every active agent: what its heartbeat key is derived from."""
        rows = self._query(
            "SELECT id, token_hash FROM agents WHERE revoked_ms IS NULL AND token_hash IS NOT NULL"
        )
        return [(str(agent_id), str(token_hash)) for agent_id, token_hash in rows]

    def agent_for_token(self, token: str) -> AgentRow | None:
        """The active agent holding ``token``, or None. The hash comparison is constant-time."""
        if not token:
            return None
        presented = hash_token(token)
        rows = self._query(
            f"SELECT token_hash, {_AGENT_COLUMNS} FROM agents WHERE token_hash = ?",  # noqa: S608
            (presented,),
        )
        if not rows or not hmac.compare_digest(str(rows[0][0]), presented):
            return None
        return AgentRow(*rows[0][1:])  # type: ignore[arg-type]

    # --- ingest ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self) -> Iterator[Writer]:
        """One transaction for everything it writes (ingest: one or many requests, a group commit)."""
        try:
            with self._tx(ingest=True) as db:
                writer = Writer(db, lock_counter=self._backend.name == "postgresql")
                yield writer
                writer.finish()
        except self._backend.errors as exc:
            raise StoreError(f"write failed: {exc}") from None
        self.failing = None

    # --- reading back ------------------------------------------------------------------------

    def latest(self) -> list[LatestRow]:
        """The newest value of every series (the fleet view at start): each agent's ``agent_latest`` row."""
        out: list[LatestRow] = []
        for agent, blob in self._query("SELECT agent, states FROM agent_latest"):
            try:
                states = _states_decoder.decode(bytes(cramjam.lz4.decompress_block(_blob(blob) or b"")))
            except (cramjam.DecompressionError, msgspec.DecodeError) as exc:
                raise StoreError(f"the latest values of agent {agent} are unreadable: {exc}") from None
            out += [LatestRow(str(agent), *state) for state in states]
        return out

    def seq_totals(self) -> dict[str, SeqTotals]:
        rows = self._query(
            # TOTAL (a float) where SUM would overflow: an agent picks its boots and sequence numbers.
            "SELECT agent, TOTAL(jumps), TOTAL(max_seq - min_seq + 1 - received) FROM boots GROUP BY agent"
        )
        return {str(a): SeqTotals(_int(j), _int(m)) for a, j, m in rows}

    def count(self, table: str, agent: str | None = None) -> int:
        """Rows in one table (tests and the CLI's listing)."""
        if table not in ("batches", "samples", "events", "agent_latest", "alert_history"):
            raise ValueError(f"unknown table {table}")
        if table == "samples":  # kept per batch
            sql = "SELECT COALESCE(SUM(sample_count), 0) FROM batches"
            if agent is None:
                return _int(self._query(sql)[0][0])
            return _int(self._query(sql + " WHERE agent = ?", (agent,))[0][0])
        if agent is None:
            return _int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608
        if table == "alert_history":
            sql = "SELECT COUNT(*) FROM alert_history WHERE scope = ?"
        else:
            sql = f"SELECT COUNT(*) FROM {table} WHERE agent = ?"  # noqa: S608
        return _int(self._query(sql, (agent,))[0][0])

    def samples_of(self, agent: str, name: str) -> list[tuple[str, int, float]]:
        """(labels_key, ts_ms, value) of every stored sample of one metric of one agent, by time."""
        rows = self._query(
            "SELECT codec, samples FROM batches WHERE agent = ? AND sample_count > 0 ORDER BY id", (agent,)
        )
        out = [
            (labels_key(sample.labels), sample.ts_ms, sample.number)
            for codec, blob in rows
            for sample in unpack_samples(_int(codec), _blob(blob))
            if sample.name == name
        ]
        out.sort(key=_by_ts)
        return out

    def samples_after(
        self, cursor: int, limit: int
    ) -> list[tuple[int, tuple[tuple[str, str], ...], float, int]]:
        """Stored samples numbered above ``cursor``, oldest first: ``(number, labels, value, ts_ms)``.

        ``labels`` is the series as Prometheus sees it (``__name__`` first, then sorted, with the
        ``agent`` and ``site`` labels the collector adds); the durable remote-writer's cursor. A
        batch holds the numbers ``first_sample .. first_sample + sample_count - 1`` in the order
        its samples were sent, so a cursor may stop inside a batch.
        """
        out: list[tuple[int, tuple[tuple[str, str], ...], float, int]] = []
        with self._lock:
            try:
                with self._backend.connection() as db:
                    rows = db.execute(
                        "SELECT b.first_sample, b.codec, b.samples, b.agent, a.site FROM batches b"
                        " LEFT JOIN agents a ON a.id = b.agent"
                        " WHERE b.sample_count > 0 AND b.first_sample > ?"
                        " AND b.first_sample + b.sample_count > ? ORDER BY b.first_sample",
                        (cursor - MAX_SAMPLES_PER_BATCH, cursor),
                    )
                    for first, codec, blob, agent, site in rows:
                        names: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
                        extra = {"agent": str(agent), "site": str(site or "")}
                        samples = unpack_samples(_int(codec), _blob(blob))
                        for number, sample in enumerate(samples, start=_int(first)):
                            if number <= cursor:
                                continue
                            key = (sample.name, labels_key(sample.labels))
                            pairs = names.get(key)
                            if pairs is None:
                                labels = {**sample.labels, **extra}
                                pairs = names[key] = (("__name__", sample.name), *sorted(labels.items()))
                            out.append((number, pairs, sample.number, sample.ts_ms))
                            if len(out) >= limit:
                                return out
            except self._backend.errors as exc:
                raise StoreError(f"query failed: {exc}") from None
        return out

    def cursor(self, key: str) -> MetaCursor:
        """A position kept in the database (the remote-write cursor when collectors take turns:
        the one that takes over resumes where the last one stopped)."""
        return MetaCursor(self, key)

    def data_version(self) -> int:
        """Changes when another connection (e.g. ``agents add``) committed since the last call."""
        with self._lock:
            try:
                return self._backend.data_version()
            except self._backend.errors as exc:
                raise StoreError(f"query failed: {exc}") from None

    # --- alerts and housekeeping ---------------------------------------------------------------

    def record_alert(self, alert: Alert, at_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO alert_history (at_ms, fingerprint, alertname, scope, state, starts_ms, ends_ms,"
                " labels, annotations) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at_ms,
                    alert.fingerprint,
                    alert.name,
                    alert.scope,
                    alert.state.value,
                    int(alert.starts_at * 1000),
                    None if alert.ends_at is None else int(alert.ends_at * 1000),
                    json.dumps(dict(alert.labels), sort_keys=True),
                    json.dumps(dict(alert.annotations), sort_keys=True),
                ),
            )

    def save_active(self, alert: Alert) -> None:
        """Keep the table of active alerts in step with a change (resolved alerts leave it)."""
        with self._tx() as db:
            if alert.state is AlertState.RESOLVED:
                db.execute("DELETE FROM alerts_active WHERE fingerprint = ?", (alert.fingerprint,))
                return
            db.execute(
                "INSERT INTO alerts_active (fingerprint, scope, state, alertname, starts_ms, fired_ms,"
                " labels, annotations) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (fingerprint) DO UPDATE SET scope = excluded.scope, state = excluded.state,"
                " starts_ms = excluded.starts_ms,"
                " fired_ms = excluded.fired_ms, labels = excluded.labels, annotations = excluded.annotations",
                (
                    alert.fingerprint,
                    alert.scope,
                    alert.state.value,
                    alert.name,
                    round(alert.starts_at * 1000),
                    None if alert.fired_at is None else round(alert.fired_at * 1000),
                    json.dumps(dict(alert.labels), sort_keys=True),
                    json.dumps(dict(alert.annotations), sort_keys=True),
                ),
            )

    def save_status(self, fingerprint: str, status: Mapping[str, object]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE alerts_active SET status = ? WHERE fingerprint = ?",
                (json.dumps(status, sort_keys=True), fingerprint),
            )

    def active_alerts(self) -> list[tuple[Alert, dict[str, object]]]:
        """The alerts active when last recorded, each with its last notification status."""
        rows = self._query(
            "SELECT fingerprint, scope, state, starts_ms, fired_ms, labels, annotations, status"
            " FROM alerts_active ORDER BY starts_ms, fingerprint"
        )
        out: list[tuple[Alert, dict[str, object]]] = []
        for fp, scope, state, starts, fired, labels, notes, status in rows:
            alert = Alert(
                labels=json.loads(str(labels)),
                annotations=json.loads(str(notes)),
                state=AlertState(str(state)),
                starts_at=_int(starts) / 1000,
                fingerprint=str(fp),
                scope=str(scope),
                fired_at=None if fired is None else _int(fired) / 1000,
            )
            out.append((alert, json.loads(str(status))))
        return out

    def active_alert(self, fingerprint: str) -> Alert:
        for alert, _status in self.active_alerts():
            if alert.fingerprint == fingerprint:
                return alert
        raise UnknownAlertError(fingerprint)

    # --- silences and acknowledgements ----------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    silence.id,
                    json.dumps([[m.name, m.op, m.value] for m in silence.matchers]),
                    round(silence.starts_at * 1000),
                    round(silence.ends_at * 1000),
                    silence.created_by,
                    silence.comment,
                    round(silence.created_at * 1000),
                ),
            )

    def expire_silence(self, silence_id: str, now_ms: int) -> None:
        """End a silence now (it stays listed as expired); unknown or already expired: an error."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE silences SET ends_ms = ?,"
                " starts_ms = CASE WHEN starts_ms < ? THEN starts_ms ELSE ? END WHERE id = ? AND ends_ms > ?",
                (now_ms, now_ms, now_ms, silence_id, now_ms),
            )
            if cursor.rowcount == 0:
                raise UnknownSilenceError(silence_id)

    def silences(self, *, since_ms: int | None = None) -> list[Silence]:
        """Every silence, or those not expired before ``since_ms``."""
        sql = "SELECT id, matchers, starts_ms, ends_ms, created_by, comment, created_ms FROM silences"
        params: tuple[object, ...] = ()
        if since_ms is not None:
            sql += " WHERE ends_ms > ?"
            params = (since_ms,)
        rows = self._query(sql + " ORDER BY created_ms, id", params)
        return [
            Silence(
                id=str(sid),
                matchers=tuple(Matcher.make(*m) for m in json.loads(str(matchers))),
                starts_at=_int(starts) / 1000,
                ends_at=_int(ends) / 1000,
                created_by=str(by),
                comment=str(comment),
                created_at=_int(created) / 1000,
            )
            for sid, matchers, starts, ends, by, comment, created in rows
        ]

    def add_ack(self, ack: Ack, alert: Alert) -> None:
        """Record an acknowledgement, and the fact in the alert's history."""
        at_ms = round(ack.at * 1000)
        with self._tx() as db:
            db.execute(
                "INSERT INTO acks (fingerprint, starts_ms, acked_by, at_ms, comment) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (fingerprint, starts_ms) DO UPDATE SET acked_by = excluded.acked_by,"
                " at_ms = excluded.at_ms, comment = excluded.comment",
                (ack.fingerprint, round(ack.starts_at * 1000), ack.by, at_ms, ack.comment),
            )
            annotations = {**alert.annotations, "acknowledged_by": ack.by, "ack_comment": ack.comment}
            db.execute(
                "INSERT INTO alert_history (at_ms, fingerprint, alertname, scope, state, starts_ms, ends_ms,"
                " labels, annotations) VALUES (?, ?, ?, ?, 'acknowledged', ?, NULL, ?, ?)",
                (
                    at_ms,
                    alert.fingerprint,
                    alert.name,
                    alert.scope,
                    round(alert.starts_at * 1000),
                    json.dumps(dict(alert.labels), sort_keys=True),
                    json.dumps(annotations, sort_keys=True),
                ),
            )

    def acks(self) -> list[Ack]:
        """Acknowledgements of the alerts active now (older ones stay for the record, unread)."""
        rows = self._query(
            "SELECT k.fingerprint, k.starts_ms, k.acked_by, k.at_ms, k.comment FROM acks k"
            " JOIN alerts_active a ON a.fingerprint = k.fingerprint AND a.starts_ms = k.starts_ms"
        )
        return [
            Ack(str(fp), _int(starts) / 1000, str(by), _int(at) / 1000, str(comment))
            for fp, starts, by, at, comment in rows
        ]

    def alert_history(self, scope: str, limit: int = 50) -> list[dict[str, object]]:
        rows = self._query(
            "SELECT at_ms, fingerprint, alertname, state, labels, annotations FROM alert_history"
            " WHERE scope = ? ORDER BY id DESC LIMIT ?",
            (scope, limit),
        )
        return [
            {
                "at_ms": r[0],
                "fingerprint": r[1],
                "alertname": r[2],
                "state": r[3],
                "labels": json.loads(str(r[4])),
                "annotations": json.loads(str(r[5])),
            }
            for r in rows
        ]

    def prune(self, cutoff_ms: int) -> int:
        """Delete batches (their ids and samples), events and alert history older than ``cutoff_ms``.

        A batch goes once it was both received and measured before the cutoff; the number of
        samples it held is returned.
        """
        old = "FROM batches WHERE received_ms < ? AND COALESCE(max_ts, 0) < ?"
        with self._tx() as db:
            removed = db.execute(
                f"SELECT COALESCE(SUM(sample_count), 0) {old}", (cutoff_ms, cutoff_ms)
            ).fetchone()[0]
            db.execute(f"DELETE {old}", (cutoff_ms, cutoff_ms))
            db.execute("DELETE FROM events WHERE ts_ms < ?", (cutoff_ms,))
            db.execute("DELETE FROM alert_history WHERE at_ms < ?", (cutoff_ms,))
            db.execute("DELETE FROM silences WHERE ends_ms < ?", (cutoff_ms,))
            db.execute(
                "DELETE FROM acks WHERE at_ms < ?"
                " AND fingerprint NOT IN (SELECT fingerprint FROM alerts_active)",
                (cutoff_ms,),
            )
        return _int(removed)

    def ping(self) -> bool:
        """Whether the store takes writes: a read is not enough (it succeeds on a full disk or a
        read-only file, where every ingest fails), so a small write is committed, and a failure of
        the last ingest write counts until one succeeds again. ``failing`` says why not."""
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('health_checks', 1)"
                    " ON CONFLICT (key) DO UPDATE SET value = meta.value + 1"
                )
        except StoreError:
            return False
        except self._backend.errors as exc:
            self.failing = str(exc)
            return False
        return self.failing is None


class MetaCursor:
    """A number in ``meta``: ``load`` and ``save`` as remote_write.CursorStore asks."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key
        self._last_saved: int | None = None

    def load(self) -> int:
        rows = self.store._query("SELECT value FROM meta WHERE key = ?", (self.key,))
        return max(_int(rows[0][0]), 0) if rows else 0

    def save(self, cursor: int) -> None:
        if cursor == self._last_saved:
            return
        with self.store._tx(ingest=True) as db:  # not a change other collectors reload for
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self.key, cursor),
            )
        self._last_saved = cursor


_COUNTER = "SELECT value FROM meta WHERE key = ?"
_COUNTER_LOCKED = _COUNTER + " FOR UPDATE"


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
        _set_agent_latest(self._db, agent, states)

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
