"""The database under the collector's ``Store``: one SQLite file, or PostgreSQL through a pool.

``Store`` writes its SQL once, in the dialect both engines share (``?`` placeholders, upserts with
``ON CONFLICT``, ``RETURNING``); a backend opens connections, runs transactions and keeps its own
versioned schema. What differs is small: PostgreSQL gets ``%s`` placeholders, a pool instead of
one connection, a ``total()`` aggregate like SQLite's, and an explicit row lock on the sample
counter, because several collectors write one database at the same time.

PostgreSQL's numbered migrations (``schema.PG_MIGRATIONS``) are recorded in ``schema_migrations``,
each applied once in its own transaction under an advisory lock, so collectors starting together
do not race.
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
# While the server cannot be reached, how long a request waits for a connection before it fails:
# reads run on the event loop, and five seconds per request there would stall heartbeats and the
# board for everyone until PostgreSQL is back.
UNREACHABLE_TIMEOUT = 0.25
MIGRATION_LOCK = 0x4C49_4645  # pg_advisory_xact_lock key held while migrating ("LIFE")


def is_postgres_dsn(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for errors and logs."""
    dsn = re.sub(r"^([a-z]+://[^:@/]*):[^@/]*@", r"\1:<redacted>@", dsn)
    return re.sub(r"(password=)[^&\s]*", r"\1<redacted>", dsn)


def side_connection(dsn: str, purpose: str, *, connect_timeout: int) -> Any:
    """A PostgreSQL connection of its own, outside the pool, for one duty of a collector (the
    leader lease, fleet sharing), named ``purpose`` in ``pg_stat_activity``. Autocommit; a peer
    whose host vanished (no FIN) is noticed by keepalives, and a query that gets no answer gives
    up after 5 s (``tcp_user_timeout``), so a duty never hangs on a dead server."""
    import psycopg

    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=connect_timeout,
        application_name=f"lifeline-collector {purpose}",
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=5000,
    )


def is_store_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot write (full, read-only, an I/O error, corrupt) rather
    than that one statement was refused (a constraint, a duplicate agent): only trouble makes
    /healthz answer 503, so a load balancer never drops a collector over one refused write."""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return True
    return any(cls.__name__ == "OperationalError" for cls in type(exc).__mro__)  # psycopg's too


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


class PostgresBackend:
    """A psycopg connection pool; every transaction takes a connection and gives it back."""

    name = "postgresql"

    def __init__(self, dsn: str, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        import psycopg
        import psycopg_pool

        self.errors: tuple[type[BaseException], ...] = (psycopg.Error, psycopg_pool.PoolTimeout)
        self._timeout = POOL_TIMEOUT
        self._pool_timeout = psycopg_pool.PoolTimeout
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

    def _getconn(self) -> Any:
        """A pooled connection; while the server is unreachable, fail fast instead of waiting."""
        try:
            conn = self.pool.getconn(timeout=self._timeout)
        except self._pool_timeout:
            self._timeout = UNREACHABLE_TIMEOUT
            raise
        self._timeout = POOL_TIMEOUT
        return conn

    def begin(self) -> Connection:
        conn = self._getconn()
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
        conn = self._getconn()
        try:
            yield PostgresConnection(conn)
        finally:
            self.pool.putconn(conn)

    def data_version(self) -> int:
        with self.connection() as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'changes'").fetchone()[0])

    def schema_version(self) -> int:
        with self.connection() as db:
            row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self, migrations: Sequence[tuple[int, str]]) -> list[int]:
        """Apply the numbered migrations (``schema.PG_MIGRATIONS``) not applied yet; the versions
        applied now."""
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
