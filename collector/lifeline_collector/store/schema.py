"""The store's tables, once per engine: SQLite's schema (``user_version``) and PostgreSQL's
numbered migrations (``schema_migrations``). Both stand at ``SCHEMA_VERSION`` when current.

A new table or column goes into both: into ``SQLITE_SCHEMA`` (created if missing, so an older file
gains it when opened) and as the next numbered entry of ``PG_MIGRATIONS`` (each runs once, in
order, in its own transaction), with ``SCHEMA_VERSION`` raised to that number.

Older SQLite files are converted when opened (``migrate_sqlite``): schema 2 stored one row per
sample in ``samples`` (each sample keeps its number, so a remote-write cursor saved before stays
valid), and schemas 2 and 3 kept one ``latest`` row per series, keyed through a ``series`` table
(they become each agent's ``agent_latest`` row, and both tables go).
"""

from __future__ import annotations

import itertools
import json
import sqlite3

from lifeline_collector.store.codec import CODEC_JSON_LZ4, as_float, as_int, json_encoder, pack_samples
from lifeline_collector.store.writer import NEXT_SAMPLE, write_agent_latest
from lifeline_wire import Sample

SCHEMA_VERSION = 5  # the last of PG_MIGRATIONS, and SQLite's user_version when current

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL DEFAULT '',
    position TEXT NOT NULL DEFAULT '',
    token_hash TEXT UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    last_seen_ms INTEGER,
    clock_offset_ms INTEGER
);
CREATE TABLE IF NOT EXISTS boots (
    agent TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    min_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    received INTEGER NOT NULL,
    jumps INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    PRIMARY KEY (agent, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    first_sample INTEGER NOT NULL DEFAULT 0,
    sample_count INTEGER NOT NULL DEFAULT 0,
    min_ts INTEGER,
    max_ts INTEGER,
    codec INTEGER NOT NULL DEFAULT 0,
    samples BLOB,
    UNIQUE (agent, boot_id, seq)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agent_latest (
    agent TEXT PRIMARY KEY,
    states BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    agent TEXT NOT NULL,
    batch INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_agent ON events (agent, ts_ms);
CREATE TABLE IF NOT EXISTS alert_history (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS acks (
    fingerprint TEXT NOT NULL,
    starts_ms INTEGER NOT NULL,
    acked_by TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    comment TEXT NOT NULL,
    PRIMARY KEY (fingerprint, starts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts_active (
    fingerprint TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    alertname TEXT NOT NULL,
    starts_ms INTEGER NOT NULL,
    fired_ms INTEGER,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
"""
# After ``migrate_sqlite``: a schema 2 file gains these columns only there.
SQLITE_INDEXES = """
CREATE INDEX IF NOT EXISTS batches_by_first_sample ON batches (first_sample, sample_count)
    WHERE sample_count > 0;
"""
SQLITE_BATCH_COLUMNS = (
    ("first_sample", "INTEGER NOT NULL DEFAULT 0"),
    ("sample_count", "INTEGER NOT NULL DEFAULT 0"),
    ("min_ts", "INTEGER"),
    ("max_ts", "INTEGER"),
    ("codec", "INTEGER NOT NULL DEFAULT 0"),
    ("samples", "BLOB"),
)


# Numbered migrations; each runs once, in order, in its own transaction. Version 4 is the schema
# SQLite reached as user_version 4 (the first one PostgreSQL had), in PostgreSQL's types:
# milliseconds and sequence numbers are BIGINT, blobs BYTEA. Version 5 (the fleet state collectors
# share) exists in PostgreSQL alone: one SQLite process has nobody to share with, and its
# user_version only follows the number.
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
    (
        5,
        """
-- Fleet state shared by collectors side by side (lifeline_collector.replica): every change of an
-- agent's row (ingest stamps last_seen in each commit) and of its newest beat gets a number from
-- one sequence, so a collector reads only what changed since it last looked.
CREATE SEQUENCE fleet_change;
CREATE FUNCTION fleet_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change := nextval('fleet_change');
    RETURN NEW;
END $$;
ALTER TABLE agents ADD COLUMN change BIGINT NOT NULL DEFAULT 0;
CREATE INDEX agents_by_change ON agents (change);
CREATE TRIGGER agents_change BEFORE INSERT OR UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION fleet_change();
-- The newest beat of each agent that some collector verified (times: that collector's clock;
-- sent_ms: the agent's, so a beat replayed to another collector never replaces a newer one).
CREATE TABLE fleet_beats (
    agent TEXT PRIMARY KEY,
    beat_ms BIGINT NOT NULL,
    sent_ms BIGINT NOT NULL,
    boot_id TEXT NOT NULL,
    signed_off_ms BIGINT,
    paths JSONB NOT NULL,
    beat_interval DOUBLE PRECISION NOT NULL,
    digest TEXT,
    collector TEXT NOT NULL,
    change BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX fleet_beats_by_change ON fleet_beats (change);
CREATE TRIGGER fleet_beats_change BEFORE INSERT OR UPDATE ON fleet_beats
    FOR EACH ROW EXECUTE FUNCTION fleet_change();
""",
    ),
)


def migrate_sqlite(db: sqlite3.Connection) -> None:
    """Schema 2 → 3: each batch's sample rows become its blob, every sample keeping its number.
    Schemas 2 and 3 → 4: the per-series ``latest`` rows become one ``agent_latest`` row per agent."""
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
            Sample(str(n), as_float(v), as_int(ts), json.loads(str(lk))) for _, _, _, n, lk, v, ts in members
        ]
        count = len(samples)
        last = max(as_int(member[1]) for member in members)
        first = last - count + 1
        low, high = min(s.ts_ms for s in samples), max(s.ts_ms for s in samples)
        blob = pack_samples(json_encoder.encode(samples))
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


def _convert_latest_rows(db: sqlite3.Connection) -> None:
    """Schemas 2 and 3 kept each series' newest value in its own ``latest`` row: they become one
    ``agent_latest`` row per agent (an agent that already has one keeps it: it is newer)."""
    rows = db.execute(
        "SELECT s.agent, s.name, s.labels, l.value, l.ts_ms, l.zero_streak FROM latest l"
        " JOIN series s ON s.id = l.series"
        " WHERE s.agent NOT IN (SELECT agent FROM agent_latest) ORDER BY s.agent, s.id"
    ).fetchall()
    for agent, group in itertools.groupby(rows, key=lambda row: row[0]):
        states = [(str(n), str(lk), as_float(v), as_int(ts), as_int(z)) for _, n, lk, v, ts, z in group]
        write_agent_latest(db, str(agent), states)
