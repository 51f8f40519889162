"""Tables of people and what they did, kept in the collector's own SQLite store.

``users`` (argon2id hashes only), ``sessions`` (hashes of session ids, each with its CSRF token),
``audit`` (append-only: SQLite triggers refuse any UPDATE, and any DELETE of a record younger than
a year, whoever asks), ``maintenance`` (which silences are maintenance windows, and for what),
``board_states`` (each position's state changes as the board saw them, for its timeline) and
``people_meta`` (the cookie signing key, made once per store).

The tables are created on first use through the store's own connection and transactions, so an
ingest commit and an audit record never race for two connections to one file.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from dataclasses import dataclass

from lifeline_collector.errors import StoreError
from lifeline_collector.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    changed_ms INTEGER NOT NULL,
    disabled_ms INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    address TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    seen_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    address TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_ms);
CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_kept_a_year BEFORE DELETE ON audit
WHEN OLD.at_ms > (CAST(strftime('%s', 'now') AS INTEGER) - 31536000) * 1000
BEGIN
    SELECT RAISE(ABORT, 'audit records are kept at least a year');
END;
CREATE TABLE IF NOT EXISTS maintenance (
    silence_id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS board_states (
    agent TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    verdict TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS board_states_by_agent ON board_states (agent, at_ms);
CREATE TABLE IF NOT EXISTS people_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

ROLES = ("viewer", "supervisor", "admin")


def role_rank(role: str) -> int:
    """viewer 1, supervisor 2, admin 3; anything else 0 (no access)."""
    return ROLES.index(role) + 1 if role in ROLES else 0


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str
    created_ms: int
    changed_ms: int
    disabled_ms: int | None

    @property
    def active(self) -> bool:
        return self.disabled_ms is None

    def can(self, role: str) -> bool:
        """Whether this user holds ``role`` or a higher one."""
        return self.active and role_rank(self.role) >= role_rank(role)


@dataclass(frozen=True, slots=True)
class SessionRow:
    user: str
    csrf: str
    address: str
    created_ms: int
    seen_ms: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """CJIS 5.4.1.1: who (actor), what (action on target), when (at_ms), where (address), outcome."""

    id: int
    at_ms: int
    actor: str
    action: str
    target: str
    address: str
    outcome: str
    detail: dict[str, object]

    def to_json(self) -> dict[str, object]:
        from lifeline_collector.alerting.alert import rfc3339

        return {
            "id": self.id,
            "at": rfc3339(self.at_ms / 1000),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "address": self.address,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class MaintenanceRow:
    silence_id: str
    scope: str  # "position" or "site"
    value: str  # the agent id or the site name
    reason: str


def hash_session(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


_USER_COLUMNS = "name, role, password_hash, created_ms, changed_ms, disabled_ms"


class PeopleStore:
    """People, sessions, audit and maintenance tables on the collector's ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        if store.backend != "sqlite":
            return  # PostgreSQL: these tables are among the store's own migrations (store.schema)
        with store._lock:
            try:
                store._db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot create the people tables: {exc}") from None

    # --- users ----------------------------------------------------------------------------------

    def user(self, name: str) -> User | None:
        rows = self.store._query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))  # noqa: S608
        return User(*rows[0]) if rows else None  # type: ignore[arg-type]

    def users(self) -> list[User]:
        rows = self.store._query(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")  # noqa: S608
        return [User(*row) for row in rows]  # type: ignore[arg-type]

    def add_user(self, name: str, role: str, password_hash: str, now_ms: int) -> bool:
        """False when the name is taken (an active or a disabled account: names are never reused)."""
        with self.store._tx() as db:
            cursor = db.execute(
                "INSERT INTO users (name, role, password_hash, created_ms, changed_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (name, role, password_hash, now_ms, now_ms),
            )
            return cursor.rowcount == 1

    def update_user(
        self,
        name: str,
        now_ms: int,
        *,
        password_hash: str | None = None,
        role: str | None = None,
        disabled: bool | None = None,
    ) -> bool:
        """Change an account; every change ends the account's sessions. False: no such user."""
        sets, params = ["changed_ms = ?"], [now_ms]
        if password_hash is not None:
            sets.append("password_hash = ?")
            params.append(password_hash)  # type: ignore[arg-type]
        if role is not None:
            sets.append("role = ?")
            params.append(role)  # type: ignore[arg-type]
        if disabled is not None:
            sets.append("disabled_ms = ?")
            params.append(now_ms if disabled else None)  # type: ignore[arg-type]
        with self.store._tx() as db:
            cursor = db.execute(f"UPDATE users SET {', '.join(sets)} WHERE name = ?", (*params, name))  # noqa: S608
            if cursor.rowcount == 0:
                return False
            db.execute('DELETE FROM sessions WHERE "user" = ?', (name,))
        return True

    # --- sessions -------------------------------------------------------------------------------

    def add_session(self, session_id: str, user: str, csrf: str, address: str, now_ms: int) -> None:
        with self.store._tx() as db:
            db.execute(
                'INSERT INTO sessions (id_hash, "user", csrf, address, created_ms, seen_ms)'
                " VALUES (?, ?, ?, ?, ?, ?)",
                (hash_session(session_id), user, csrf, address, now_ms, now_ms),
            )

    def session(self, session_id: str) -> SessionRow | None:
        rows = self.store._query(
            'SELECT "user", csrf, address, created_ms, seen_ms FROM sessions WHERE id_hash = ?',
            (hash_session(session_id),),
        )
        return SessionRow(*rows[0]) if rows else None  # type: ignore[arg-type]

    def touch_session(self, session_id: str, now_ms: int) -> None:
        with self.store._tx() as db:
            db.execute(
                "UPDATE sessions SET seen_ms = ? WHERE id_hash = ?", (now_ms, hash_session(session_id))
            )

    def drop_session(self, session_id: str) -> None:
        with self.store._tx() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (hash_session(session_id),))

    def drop_stale_sessions(self, created_before_ms: int, seen_before_ms: int) -> int:
        with self.store._tx() as db:
            return db.execute(
                "DELETE FROM sessions WHERE created_ms < ? OR seen_ms < ?",
                (created_before_ms, seen_before_ms),
            ).rowcount

    def secret(self) -> str:
        """The key that signs session cookies: made once, kept in the store (a restart keeps logins)."""
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO people_meta (key, value) VALUES ('cookie_secret', ?) ON CONFLICT DO NOTHING",
                (secrets.token_urlsafe(32),),
            )
            row = db.execute("SELECT value FROM people_meta WHERE key = 'cookie_secret'").fetchone()
        return str(row[0])

    # --- audit ----------------------------------------------------------------------------------

    def audit(
        self,
        *,
        at_ms: int,
        actor: str,
        action: str,
        target: str = "",
        address: str = "",
        outcome: str = "success",
        detail: dict[str, object] | None = None,
    ) -> None:
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO audit (at_ms, actor, action, target, address, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (at_ms, actor, action, target, address, outcome, json.dumps(detail or {}, sort_keys=True)),
            )

    def audit_records(
        self,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        actor: str = "",
        action: str = "",
        target: str = "",
        outcome: str = "",
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Newest first. ``target`` matches a part of the target (``pos-12`` finds ``agent=pos-12``)."""
        where: list[str] = []
        params: list[object] = []
        for column, value in (("actor", actor), ("action", action), ("outcome", outcome)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if target:  # a part of the target, any case; LIKE is the one both engines have
            where.append("lower(target) LIKE ? ESCAPE '\\'")
            escaped = target.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        if since_ms is not None:
            where.append("at_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("at_ms < ?")
            params.append(until_ms)
        sql = "SELECT id, at_ms, actor, action, target, address, outcome, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store._query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [
            AuditRecord(
                int(str(r[0])),
                int(str(r[1])),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                str(r[5]),
                str(r[6]),
                json.loads(str(r[7])),
            )
            for r in rows
        ]

    def prune_audit(self, before_ms: int) -> int:
        """Drop audit records older than ``before_ms`` (the retention); the store refuses any younger
        than a year whatever the caller asks (StoreError, nothing dropped)."""
        try:
            with self.store._tx() as db:
                return db.execute("DELETE FROM audit WHERE at_ms < ?", (before_ms,)).rowcount
        except self.store.errors as exc:
            raise StoreError(f"audit records not pruned: {exc}") from None

    # --- maintenance windows ----------------------------------------------------------------------

    def add_maintenance(self, row: MaintenanceRow) -> None:
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO maintenance (silence_id, scope, value, reason) VALUES (?, ?, ?, ?)",
                (row.silence_id, row.scope, row.value, row.reason),
            )

    def maintenance(self) -> dict[str, MaintenanceRow]:
        rows = self.store._query("SELECT silence_id, scope, value, reason FROM maintenance")
        return {str(r[0]): MaintenanceRow(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}

    # --- the board's state changes ----------------------------------------------------------------

    def add_state_changes(self, changes: list[tuple[str, int, str, str]]) -> None:
        """(agent, at_ms, state, verdict) each, in one transaction."""
        if not changes:
            return
        with self.store._tx() as db:
            db.executemany(
                "INSERT INTO board_states (agent, at_ms, state, verdict) VALUES (?, ?, ?, ?)", changes
            )

    def state_changes(self, agent: str, since_ms: int) -> list[tuple[int, str, str]]:
        rows = self.store._query(
            "SELECT at_ms, state, verdict FROM board_states WHERE agent = ? AND at_ms >= ? ORDER BY at_ms",
            (agent, since_ms),
        )
        return [(int(str(r[0])), str(r[1]), str(r[2])) for r in rows]

    def prune_state_changes(self, before_ms: int) -> int:
        with self.store._tx() as db:
            return db.execute("DELETE FROM board_states WHERE at_ms < ?", (before_ms,)).rowcount
