"""The agents a collector accepts, and their tokens: kept only as SHA-256 hashes.

Each function runs on a connection ``Store`` hands it, inside its lock and transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from lifeline_collector.errors import DuplicateAgentError, UnknownAgentError
from lifeline_collector.store.backends import Connection


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_AGENT_COLUMNS = "id, site, position, created_ms, revoked_ms, last_seen_ms, clock_offset_ms"


def add_agent(db: Connection, agent_id: str, *, site: str, position: str, now_ms: int) -> str:
    """Register an agent (or re-issue a revoked one) and return its token; only the hash is kept."""
    token = secrets.token_urlsafe(32)
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


def revoke_agent(db: Connection, agent_id: str, *, now_ms: int) -> None:
    cursor = db.execute(
        "UPDATE agents SET token_hash = NULL, revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
        (now_ms, agent_id),
    )
    if cursor.rowcount == 0:
        raise UnknownAgentError(agent_id)


def agents(db: Connection, *, include_revoked: bool) -> list[AgentRow]:
    where = "" if include_revoked else " WHERE revoked_ms IS NULL"
    rows = db.execute(f"SELECT {_AGENT_COLUMNS} FROM agents{where} ORDER BY id")  # noqa: S608
    return [AgentRow(*row) for row in rows]


def agent(db: Connection, agent_id: str) -> AgentRow | None:
    row = db.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,)).fetchone()  # noqa: S608
    return AgentRow(*row) if row is not None else None


def token_hashes(db: Connection) -> list[tuple[str, str]]:
    """(id, token hash) of every active agent: what its heartbeat key is derived from."""
    rows = db.execute("SELECT id, token_hash FROM agents WHERE revoked_ms IS NULL AND token_hash IS NOT NULL")
    return [(str(agent_id), str(token_hash)) for agent_id, token_hash in rows]


def agent_for_token(db: Connection, token: str) -> AgentRow | None:
    """The active agent holding ``token``, or None. The hash comparison is constant-time."""
    presented = hash_token(token)
    row = db.execute(
        f"SELECT token_hash, {_AGENT_COLUMNS} FROM agents WHERE token_hash = ?",  # noqa: S608
        (presented,),
    ).fetchone()
    if row is None or not hmac.compare_digest(str(row[0]), presented):
        return None
    return AgentRow(*row[1:])
