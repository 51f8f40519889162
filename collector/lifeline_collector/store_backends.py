"""The database under the collector's ``Store``: one SQLite file, or PostgreSQL through a pool.

``Store`` writes its SQL once, in the dialect both engines share (``?`` placeholders, upserts with
``ON CONFLICT``, ``RETURNING``); a backend opens connections, runs transactions and keeps its own
versioned schema. What differs is small: PostgreSQL gets ``%s`` placeholders, a pool instead of
one connection, a ``total()`` aggregate like SQLite's, and an explicit row lock on the sample
counter, because several collectors write one database at the same time.

The PostgreSQL schema is kept as numbered migrations in ``schema_migrations``, each applied once
in its own transaction under an advisory lock, so collectors starting together do not race. Its
numbers continue SQLite's ``user_version``: both stand at ``SCHEMA_VERSION`` when current.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

DEFAULT_POOL_SIZE = 4
POOL_TIMEOUT = 5.0  # seconds to wait for a connection before the request fails (503, retried)
MIGRATION_LOCK = 0x4C49_4645  # pg_advisory_xact_lock key held while migrating ("LIFE")


def is_postgres_dsn(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for errors and logs."""
    dsn = re.sub(r"^([a-z]+://[^:@/]*):[^@/]*@", r"\1:<redacted>@", dsn)
    return re.sub(r"(password=)[^&\s]*", r"\1<redacted>", dsn)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What ``Store`` and ``Writer`` use of a connection: sqlite3's, or the PostgreSQL adapter."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Backend(Protocol):
    name: str

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What the engine raises: turned into StoreError."""
        ...

    def begin(self) -> Connection: ...
    def commit(self, db: Connection) -> None: ...
    def rollback(self, db: Connection) -> None: ...
    def release(self, db: Connection) -> None: ...
    def connection(self) -> contextlib.AbstractContextManager[Connection]: ...
    def data_version(self) -> int: ...
    def schema_version(self) -> int: ...
    def close(self) -> None: ...


class SqliteBackend:
    """One connection (the caller holds the store's lock around every use)."""

    name = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def begin(self) -> Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def commit(self, db: Connection) -> None:
        self.db.execute("COMMIT")

    def rollback(self, db: Connection) -> None:
        """SQLite rolls some transactions back by itself (a full disk, an I/O error); a ROLLBACK
        then fails with "cannot rollback", which must not hide the real cause."""
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    def release(self, db: Connection) -> None:
        pass

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        yield self.db

    def data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()


_PG_SQL: dict[str, str] = {}


def _pg(sql: str) -> str:
    """The store's SQL with psycopg's placeholders (the store's SQL holds no literal ``?`` or ``%``)."""
    translated = _PG_SQL.get(sql)
    if translated is None:
        translated = _PG_SQL[sql] = sql.replace("?", "%s")
    return translated


class PostgresConnection:
    """A pooled psycopg connection that speaks the store's SQL."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        cursor: Cursor = self.conn.execute(_pg(sql), parameters)
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(_pg(sql), list(parameters))


# Numbered migrations; each runs once, in order, in its own transaction. Version 4 is the schema
# SQLite reached as user_version 4 (the first one PostgreSQL had), in PostgreSQL's types:
# milliseconds and sequence numbers are BIGINT, blobs BYTEA.
PG_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        4,
        """
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL DEFAULT '',
    position TEXT NOT NULL DEFAULT '',
    token_hash TEXT UNIQUE,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    last_seen_ms BIGINT,
    clock_offset_ms BIGINT
);
CREATE TABLE boots (
    agent TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    min_seq BIGINT NOT NULL,
    max_seq BIGINT NOT NULL,
    received BIGINT NOT NULL,
    jumps BIGINT NOT NULL,
    first_ms BIGINT NOT NULL,
    PRIMARY KEY (agent, boot_id)
);
CREATE TABLE batches (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    agent TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    priority INTEGER NOT NULL,
    first_sample BIGINT NOT NULL DEFAULT 0,
    sample_count INTEGER NOT NULL DEFAULT 0,
    min_ts BIGINT,
    max_ts BIGINT,
    codec INTEGER NOT NULL DEFAULT 0,
    samples BYTEA,
    UNIQUE (agent, boot_id, seq)
);
CREATE INDEX batches_by_first_sample ON batches (first_sample, sample_count) WHERE sample_count > 0;
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
-- The sample counter exists from the start: writers lock its row (SELECT ... FOR UPDATE).
INSERT INTO meta (key, value) VALUES ('next_sample', 1);
CREATE TABLE agent_latest (
    agent TEXT PRIMARY KEY,
    states BYTEA NOT NULL
);
CREATE TABLE events (
    agent TEXT NOT NULL,
    batch BIGINT NOT NULL,
    type TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    attributes TEXT NOT NULL
);
CREATE INDEX events_by_agent ON events (agent, ts_ms);
CREATE TABLE alert_history (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    starts_ms BIGINT NOT NULL,
    ends_ms BIGINT,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL
);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE acks (
    fingerprint TEXT NOT NULL,
    starts_ms BIGINT NOT NULL,
    acked_by TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    comment TEXT NOT NULL,
    PRIMARY KEY (fingerprint, starts_ms)
);
CREATE TABLE alerts_active (
    fingerprint TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    alertname TEXT NOT NULL,
    starts_ms BIGINT NOT NULL,
    fired_ms BIGINT,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}'
);
-- The people tables (lifeline_collector.people.store creates them itself in a SQLite file).
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    changed_ms BIGINT NOT NULL,
    disabled_ms BIGINT
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    csrf TEXT NOT NULL,
    address TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions ("user");
CREATE TABLE audit (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    address TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE FUNCTION audit_kept_a_year() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.at_ms > (EXTRACT(EPOCH FROM now())::BIGINT - 31536000) * 1000 THEN
        RAISE EXCEPTION 'audit records are kept at least a year';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_kept_a_year BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_kept_a_year();
CREATE TABLE maintenance (
    silence_id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE board_states (
    agent TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    verdict TEXT NOT NULL
);
CREATE INDEX board_states_by_agent ON board_states (agent, at_ms);
CREATE TABLE people_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- SQLite's instr() (the audit search), and its total(): a float sum that is 0 over no rows.
CREATE FUNCTION instr(text, text) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT strpos($1, $2)';
CREATE AGGREGATE total(double precision) (SFUNC = float8pl, STYPE = double precision, INITCOND = '0');
-- Bumped by every change other than ingest, so a collector notices what another one (or the
-- CLI) changed: SQLite's PRAGMA data_version.
INSERT INTO meta (key, value) VALUES ('changes', 0);
-- The term of the collector leading alerting (lifeline_collector.leader): one more each takeover.
INSERT INTO meta (key, value) VALUES ('leader_epoch', 0);
""",
    ),
)


class PostgresBackend:
    """A psycopg connection pool; every transaction takes a connection and gives it back."""

    name = "postgresql"

    def __init__(self, dsn: str, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        import psycopg
        import psycopg_pool

        self.errors: tuple[type[BaseException], ...] = (psycopg.Error, psycopg_pool.PoolTimeout)
        self.pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},  # transactions are explicit BEGIN / COMMIT
            timeout=POOL_TIMEOUT,
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=POOL_TIMEOUT)
        except BaseException:
            self.pool.close()
            raise

    def begin(self) -> Connection:
        conn = self.pool.getconn()
        try:
            conn.execute("BEGIN")
        except BaseException:
            self.pool.putconn(conn)
            raise
        return PostgresConnection(conn)

    def commit(self, db: Connection) -> None:
        assert isinstance(db, PostgresConnection)
        db.conn.execute("COMMIT")

    def rollback(self, db: Connection) -> None:
        assert isinstance(db, PostgresConnection)
        with contextlib.suppress(*self.errors):
            db.conn.execute("ROLLBACK")

    def release(self, db: Connection) -> None:
        assert isinstance(db, PostgresConnection)
        self.pool.putconn(db.conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.pool.connection() as conn:
            yield PostgresConnection(conn)

    def data_version(self) -> int:
        with self.connection() as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'changes'").fetchone()[0])

    def schema_version(self) -> int:
        with self.connection() as db:
            row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self, migrations: Sequence[tuple[int, str]] = PG_MIGRATIONS) -> list[int]:
        """Apply the migrations not applied yet; the versions applied now."""
        applied: list[int] = []
        with self.pool.connection() as pooled:
            conn: Any = pooled
            for version, script in migrations:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations"
                        " (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)"
                    )
                    done = conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)
                    ).fetchone()
                    if done is not None:
                        continue
                    conn.execute(script)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_ms) VALUES (%s, %s)",
                        (version, int(time.time() * 1000)),
                    )
                    applied.append(version)
        return applied

    def close(self) -> None:
        self.pool.close()
