"""``Store``: the one object the collector holds for its database, SQLite (WAL) or PostgreSQL.

It opens the database and brings its schema up to date (``schema``), runs each transaction under
one lock (``backends``), and is the door to every room: agents and tokens (``agents``), the
ingest transaction (``writer``), and reading back batches, series and counters (``codec``).
Alert, silence and acknowledgement records are kept by ``alerting.store`` through it, and the
people tables by ``people.store``.

The same store runs on PostgreSQL when its location is a ``postgresql://`` DSN: several collectors
then share one database, and (agent, boot, seq) stays unique across them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from lifeline_collector.errors import StoreError
from lifeline_collector.store import agents
from lifeline_collector.store.agents import AgentRow, hash_token
from lifeline_collector.store.backends import (
    DEFAULT_POOL_SIZE,
    Backend,
    Connection,
    PostgresBackend,
    SqliteBackend,
    is_postgres_dsn,
    is_store_trouble,
    safe_dsn,
)
from lifeline_collector.store.codec import (
    LatestRow,
    SeqTotals,
    as_blob,
    as_int,
    decode_states,
    labels_key,
    unpack_samples,
)
from lifeline_collector.store.schema import (
    PG_MIGRATIONS,
    SCHEMA_VERSION,
    SQLITE_INDEXES,
    SQLITE_SCHEMA,
    migrate_sqlite,
)
from lifeline_collector.store.writer import Writer
from lifeline_wire.schema import MAX_SAMPLES_PER_BATCH


def _by_ts(row: tuple[str, int, float]) -> int:
    return row[1]


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
        backend.migrate(PG_MIGRATIONS)
    except backend.errors as exc:
        backend.close()
        raise StoreError(f"cannot migrate store {where}: {exc}") from None
    return backend


class Store:
    def __init__(self, path: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        """``path``: a SQLite file, or a PostgreSQL DSN (``postgresql://…``) with a pool of
        ``pool_size`` connections. Either way the schema is brought up to date here."""
        self.path = path
        # Why the last write failed, until a write of ingest succeeds again (``ping``).
        self.failing: str | None = None
        # SQLite: one connection, used by the event loop; the lock guards tests and CLI use from threads.
        self._lock = threading.RLock()
        # token hash → its active agent (``agent_for_token``), and a number that every change of
        # the registry raises, so a lookup that raced with a revocation does not keep its answer.
        self._tokens: dict[str, AgentRow] = {}
        self._tokens_generation = 0
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
            migrate_sqlite(self._db)
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
                if is_store_trouble(exc):
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
                if not ingest:  # agents added, revoked or re-issued here: tokens are looked up anew
                    self.forget_tokens()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reading, outside any transaction of this store's."""
        with self._lock:
            try:
                with self._backend.connection() as db:
                    yield db
            except self._backend.errors as exc:
                raise StoreError(f"query failed: {exc}") from None

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._read() as db:
            return list(db.execute(sql, params))

    # --- agents and tokens (``agents``) ------------------------------------------------------------

    def add_agent(self, agent_id: str, *, site: str = "", position: str = "", now_ms: int) -> str:
        """Register an agent (or re-issue a revoked one) and return its token; only the hash is kept."""
        with self._tx() as db:
            return agents.add_agent(db, agent_id, site=site, position=position, now_ms=now_ms)

    def revoke_agent(self, agent_id: str, *, now_ms: int) -> None:
        with self._tx() as db:
            agents.revoke_agent(db, agent_id, now_ms=now_ms)

    def agents(self, *, include_revoked: bool = False) -> list[AgentRow]:
        with self._read() as db:
            return agents.agents(db, include_revoked=include_revoked)

    def agent(self, agent_id: str) -> AgentRow | None:
        with self._read() as db:
            return agents.agent(db, agent_id)

    def token_hashes(self) -> list[tuple[str, str]]:
        """(id, token hash) of every active agent: what its heartbeat key is derived from."""
        with self._read() as db:
            return agents.token_hashes(db)

    def agent_for_token(self, token: str) -> AgentRow | None:
        """The active agent holding ``token``, or None (an empty token is no one's).

        Every request asks this, so a valid token's agent is kept — under the token's hash, never
        the token — until the registry changes: a change made through this store forgets them at
        once, one made by another process or collector when the collector's tick notices it
        (:meth:`forget_tokens`). Over PostgreSQL that spares the event loop a round trip per
        request. Unknown tokens are not kept: each is asked of the database again."""
        if not token:
            return None
        presented = hash_token(token)
        known = self._tokens.get(presented)
        if known is not None:
            return known
        generation = self._tokens_generation
        with self._read() as db:
            agent = agents.agent_for_token(db, token)
        if agent is not None and generation == self._tokens_generation:
            self._tokens[presented] = agent
        return agent

    def forget_tokens(self) -> None:
        """Look every token up in the database again (the registry changed)."""
        self._tokens_generation += 1
        self._tokens = {}

    # --- ingest (``writer``) ---------------------------------------------------------------------

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

    # --- reading back (``codec``) --------------------------------------------------------------------

    def latest(self) -> list[LatestRow]:
        """The newest value of every series (the fleet view at start): each agent's ``agent_latest`` row."""
        out: list[LatestRow] = []
        for agent, blob in self._query("SELECT agent, states FROM agent_latest"):
            out += [LatestRow(str(agent), *state) for state in decode_states(as_blob(blob), str(agent))]
        return out

    def seq_totals(self) -> dict[str, SeqTotals]:
        rows = self._query(
            # TOTAL (a float) where SUM would overflow: an agent picks its boots and sequence numbers.
            "SELECT agent, TOTAL(jumps), TOTAL(max_seq - min_seq + 1 - received) FROM boots GROUP BY agent"
        )
        return {str(a): SeqTotals(as_int(j), as_int(m)) for a, j, m in rows}

    def count(self, table: str, agent: str | None = None) -> int:
        """Rows in one table (tests and the CLI's listing)."""
        if table not in ("batches", "samples", "events", "agent_latest", "alert_history"):
            raise ValueError(f"unknown table {table}")
        if table == "samples":  # kept per batch
            sql = "SELECT COALESCE(SUM(sample_count), 0) FROM batches"
            if agent is None:
                return as_int(self._query(sql)[0][0])
            return as_int(self._query(sql + " WHERE agent = ?", (agent,))[0][0])
        if agent is None:
            return as_int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608
        if table == "alert_history":
            sql = "SELECT COUNT(*) FROM alert_history WHERE scope = ?"
        else:
            sql = f"SELECT COUNT(*) FROM {table} WHERE agent = ?"  # noqa: S608
        return as_int(self._query(sql, (agent,))[0][0])

    def samples_of(self, agent: str, name: str, since_ms: int = 0) -> list[tuple[str, int, float]]:
        """(labels_key, ts_ms, value) of every stored sample of one metric of one agent, by time,
        from ``since_ms`` on (batches whose newest sample is older are not even decoded)."""
        sql = "SELECT codec, samples FROM batches WHERE agent = ? AND sample_count > 0"
        params: tuple[object, ...] = (agent,)
        if since_ms > 0:
            sql += " AND max_ts >= ?"
            params = (agent, since_ms)
        rows = self._query(sql + " ORDER BY id", params)
        out = [
            (labels_key(sample.labels), sample.ts_ms, sample.number)
            for codec, blob in rows
            for sample in unpack_samples(as_int(codec), as_blob(blob))
            if sample.name == name and (since_ms <= 0 or sample.ts_ms >= since_ms)
        ]
        out.sort(key=_by_ts)
        return out

    def events_of(
        self, agent: str, type_: str, since_ms: int = 0, limit: int = 1000
    ) -> list[tuple[int, str]]:
        """(ts_ms, attributes as JSON text) of one agent's stored events of one type, oldest first."""
        rows = self._query(
            "SELECT ts_ms, attributes FROM events WHERE agent = ? AND type = ? AND ts_ms >= ?"
            " ORDER BY ts_ms LIMIT ?",
            (agent, type_, since_ms, limit),
        )
        return [(as_int(ts), str(attributes)) for ts, attributes in rows]

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
                        samples = unpack_samples(as_int(codec), as_blob(blob))
                        for number, sample in enumerate(samples, start=as_int(first)):
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

    # --- housekeeping ------------------------------------------------------------------------------

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
        return as_int(removed)

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
    """A number in ``meta``: ``load`` and ``save`` as remote_write.durable.CursorStore asks."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key
        self._last_saved: int | None = None

    def load(self) -> int:
        rows = self.store._query("SELECT value FROM meta WHERE key = ?", (self.key,))
        return max(as_int(rows[0][0]), 0) if rows else 0

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
