"""The store, against SQLite and a real PostgreSQL alike: hashed tokens, transactions, batch blobs
and their sample numbers (the remote-write cursor), pruning, idempotency and numbering across two
stores on one database (two collectors), migrations; and the conversion of a schema 2 SQLite file."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from collector_kit import T0, cad_round

from lifeline_collector import store as store_module
from lifeline_collector.alerting.alert import Alert, AlertState, fingerprint
from lifeline_collector.alerting.errors import UnknownSilenceError
from lifeline_collector.alerting.silences import Ack, Matcher, Silence
from lifeline_collector.alerting.store import AlertStore
from lifeline_collector.errors import DuplicateAgentError, UnknownAgentError
from lifeline_collector.store import Store, hash_token, labels_key
from lifeline_wire import Batch, Sample

MS = int(T0 * 1000)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database (its DSN)."""
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return dsn
    return str(tmp_path / "sub" / "lifeline.db")


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    made = Store(location)
    yield made
    made.close()


def test_tokens_are_random_hashed_and_revocable(store: Store) -> None:
    one = store.add_agent("pos-1", now_ms=MS)
    two = store.add_agent("pos-2", now_ms=MS)
    assert one != two
    assert store.agent_for_token(one).id == "pos-1"  # type: ignore[union-attr]
    assert store.agent_for_token("") is None
    assert store.agent_for_token(hash_token(one)) is None  # the stored hash is not a token
    with pytest.raises(DuplicateAgentError):
        store.add_agent("pos-1", now_ms=MS)
    store.revoke_agent("pos-1", now_ms=MS)
    assert store.agent_for_token(one) is None
    with pytest.raises(UnknownAgentError):
        store.revoke_agent("pos-1", now_ms=MS)


LATEST_NAME = "lifeline_probe_success"


def test_failed_request_writes_nothing(store: Store) -> None:
    store.add_agent("pos-1", now_ms=MS)
    batch = Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS, samples=cad_round(MS, True, 0))

    def crash_mid_request() -> None:
        with store.writer() as writer:
            batch_id = writer.insert_batch("pos-1", batch, MS)
            assert batch_id is not None
            writer.set_agent_latest("pos-1", [(LATEST_NAME, labels_key(batch.samples[0].labels), 1.0, MS, 0)])
            raise RuntimeError("crash in the middle of a request")

    with pytest.raises(RuntimeError):
        crash_mid_request()
    assert store.count("batches") == 0
    assert store.count("samples") == 0
    assert store.count("agent_latest") == 0
    assert store.latest() == []
    # ... and the retry after the failure is stored normally (no stale cached series id or number).
    with store.writer() as writer:
        batch_id = writer.insert_batch("pos-1", batch, MS)
        assert batch_id is not None
        writer.set_agent_latest("pos-1", [(LATEST_NAME, labels_key(batch.samples[0].labels), 1.0, MS, 0)])
    assert store.count("samples") == 2
    assert [(r.name, r.value) for r in store.latest()] == [(LATEST_NAME, 1.0)]
    assert [row[0] for row in store.samples_after(0, 10)] == [1, 2]


def test_samples_after_is_a_cursor_with_prometheus_labels(store: Store) -> None:
    store.add_agent("pos-1", site="north", now_ms=MS)
    labels = {"target": "cad", "role": "cad"}
    samples = [Sample("lifeline_probe_success", float(i % 2), MS + i, labels) for i in range(5)]
    with store.writer() as writer:
        batch_id = writer.insert_batch(
            "pos-1", Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS, samples=samples), MS
        )
        assert batch_id is not None
    first = store.samples_after(0, 3)  # the cursor stops inside the batch ...
    assert [row[3] for row in first] == [MS, MS + 1, MS + 2]
    assert first[0][1] == (
        ("__name__", "lifeline_probe_success"),
        ("agent", "pos-1"),
        ("role", "cad"),
        ("site", "north"),
        ("target", "cad"),
    )
    rest = store.samples_after(first[-1][0], 100)  # ... and resumes there
    assert [row[3] for row in rest] == [MS + 3, MS + 4]
    assert [row[2] for row in first + rest] == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert store.samples_after(rest[-1][0], 100) == []


def test_samples_keep_their_order_numbers_and_non_finite_values(store: Store) -> None:
    """Round trip through the blob: every sample once, in the order sent, numbered in commit order
    across batches; a duplicate takes no numbers; NaN and ±Inf come back as such."""
    store.add_agent("pos-1", now_ms=MS)
    odd = [
        Sample("lifeline_cad_risk_ratio", math.nan, MS + 2, {}),
        Sample("lifeline_cad_time_to_loss_seconds", math.inf, MS + 1, {}),
        Sample("lifeline_cad_time_to_loss_seconds", -math.inf, MS + 3, {}),
    ]
    first = Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS, samples=cad_round(MS, True, 0))
    second = Batch(agent_id="pos-1", boot_id="b", seq=1, created_ms=MS, samples=odd)
    with store.writer() as writer:
        assert writer.insert_batch("pos-1", first, MS) is not None
        assert writer.insert_batch("pos-1", first, MS) is None  # the same (agent, boot, seq)
        assert writer.insert_batch("pos-1", second, MS) is not None
    with store.writer() as writer:
        assert writer.insert_batch("pos-1", second, MS) is None  # and in a later transaction
    rows = store.samples_after(0, 100)
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5]
    assert [(row[1][0][1], row[3]) for row in rows] == [
        ("lifeline_probe_success", MS),
        ("lifeline_probe_consecutive_failures", MS),
        ("lifeline_cad_risk_ratio", MS + 2),
        ("lifeline_cad_time_to_loss_seconds", MS + 1),
        ("lifeline_cad_time_to_loss_seconds", MS + 3),
    ]
    assert math.isnan(rows[2][2])
    assert [row[2] for row in rows[3:]] == [math.inf, -math.inf]
    assert store.count("samples") == 5
    assert store.count("batches") == 2
    # samples_of reads one metric back by time.
    assert [
        (ts, value) for _, ts, value in store.samples_of("pos-1", "lifeline_cad_time_to_loss_seconds")
    ] == [
        (MS + 1, math.inf),
        (MS + 3, -math.inf),
    ]


def test_numbers_keep_growing_after_every_batch_is_pruned(store: Store) -> None:
    """A remote-write cursor never points past new samples, even once retention emptied the store."""
    store.add_agent("pos-1", now_ms=MS)
    with store.writer() as writer:
        writer.insert_batch("pos-1", Batch("pos-1", "b", 0, MS, samples=cad_round(MS, True, 0)), MS)
    assert store.prune(MS + 1) == 2
    assert store.count("batches") == 0
    with store.writer() as writer:
        writer.insert_batch("pos-1", Batch("pos-1", "b", 1, MS, samples=cad_round(MS + 5, True, 0)), MS + 5)
    assert [row[0] for row in store.samples_after(2, 10)] == [3, 4]


def test_prune_drops_old_batches_with_their_samples(store: Store) -> None:
    store.add_agent("pos-1", now_ms=MS)
    with store.writer() as writer:
        old = Batch("pos-1", "b", 0, MS, samples=[Sample("lifeline_power_on_ac", 1.0, MS, {})])
        new = Batch("pos-1", "b", 1, MS, samples=[Sample("lifeline_power_on_ac", 1.0, MS + 10_000, {})])
        # Received late but measured long ago, or measured recently: either keeps a batch.
        backfill = Batch("pos-1", "b", 2, MS, samples=[Sample("lifeline_power_on_ac", 1.0, MS, {})])
        assert writer.insert_batch("pos-1", old, MS) is not None
        assert writer.insert_batch("pos-1", new, MS) is not None
        assert writer.insert_batch("pos-1", backfill, MS + 10_000) is not None
    assert store.prune(MS + 5_000) == 1
    assert store.count("samples") == 2
    assert store.count("batches") == 2
    assert [row[3] for row in store.samples_after(0, 10)] == [MS + 10_000, MS]


def _schema_2_file(path: Path) -> None:
    """A store as schema 2 left it: one row per sample (rows of two batches, one of them pruned)."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE agents (id TEXT PRIMARY KEY, site TEXT NOT NULL DEFAULT '', position TEXT NOT NULL
            DEFAULT '', token_hash TEXT UNIQUE, created_ms INTEGER NOT NULL, revoked_ms INTEGER,
            last_seen_ms INTEGER, clock_offset_ms INTEGER);
        CREATE TABLE batches (id INTEGER PRIMARY KEY, agent TEXT NOT NULL, boot_id TEXT NOT NULL,
            seq INTEGER NOT NULL, created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
            priority INTEGER NOT NULL, UNIQUE (agent, boot_id, seq));
        CREATE TABLE series (id INTEGER PRIMARY KEY, agent TEXT NOT NULL, name TEXT NOT NULL,
            labels TEXT NOT NULL, UNIQUE (agent, name, labels));
        CREATE TABLE samples (series INTEGER NOT NULL, ts_ms INTEGER NOT NULL, value REAL,
            batch INTEGER NOT NULL);
        CREATE INDEX samples_by_series ON samples (series, ts_ms);
        CREATE TABLE latest (series INTEGER PRIMARY KEY, value REAL, ts_ms INTEGER NOT NULL,
            zero_streak INTEGER NOT NULL);
        PRAGMA user_version = 2;
        """
    )
    db.execute("INSERT INTO agents (id, site, created_ms) VALUES ('pos-1', 'north', ?)", (MS,))
    db.execute("INSERT INTO batches VALUES (7, 'pos-1', 'b', 0, ?, ?, 0)", (MS, MS))
    db.execute("INSERT INTO series VALUES (1, 'pos-1', 'lifeline_probe_success', '{\"target\":\"cad\"}')")
    db.execute("INSERT INTO series VALUES (2, 'pos-1', 'lifeline_cad_risk_ratio', '{}')")
    rows = [(1, MS, 1.0, 7), (2, MS, None, 7), (1, MS + 1000, 0.0, 7), (1, MS + 2000, 1.0, 8)]
    db.executemany("INSERT INTO samples (series, ts_ms, value, batch) VALUES (?, ?, ?, ?)", rows)
    db.execute("INSERT INTO latest VALUES (1, 1.0, ?, 0)", (MS + 2000,))
    db.commit()
    db.close()


def test_a_schema_2_store_is_converted_keeping_every_sample_and_its_number(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_2_file(path)
    store = Store(str(path))
    try:
        rows = store.samples_after(0, 100)
        # The old row ids are the numbers: a remote-write cursor saved before stays valid.
        assert [(row[0], row[1][0][1], row[3]) for row in rows] == [
            (1, "lifeline_probe_success", MS),
            (2, "lifeline_cad_risk_ratio", MS),
            (3, "lifeline_probe_success", MS + 1000),
            (4, "lifeline_probe_success", MS + 2000),  # its batch row was pruned: kept anyway
        ]
        assert math.isnan(rows[1][2])
        assert [row[0] for row in store.samples_after(2, 100)] == [3, 4]
        assert store.count("samples") == 4
        assert store.count("batches") == 2
        assert [(r.name, r.ts_ms) for r in store.latest()] == [("lifeline_probe_success", MS + 2000)]
        # The retried batch is still a duplicate; new samples are numbered after the old ones.
        with store.writer() as writer:
            assert writer.insert_batch("pos-1", Batch("pos-1", "b", 0, MS), MS) is None
            writer.insert_batch(
                "pos-1", Batch("pos-1", "b", 1, MS, samples=cad_round(MS + 3000, True, 0)), MS
            )
        assert [row[0] for row in store.samples_after(4, 100)] == [5, 6]
    finally:
        store.close()
    again = Store(str(path))  # opening a converted file again changes nothing
    try:
        assert again.count("samples") == 6
        tables = {str(r[0]) for r in again._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not {"samples", "series", "latest"} & tables  # per-sample and per-series rows are gone
        assert [(r.name, r.ts_ms) for r in again.latest()] == [("lifeline_probe_success", MS + 2000)]
        assert again._query("PRAGMA user_version")[0][0] == store_module.SCHEMA_VERSION
    finally:
        again.close()


def test_schema_is_current_and_opening_again_changes_nothing(store: Store, location: str) -> None:
    assert store.schema_version() == store_module.SCHEMA_VERSION
    assert store.ping()  # /healthz: a committed write
    assert store.ping()
    again = Store(location)  # a second collector starting on the same database
    try:
        assert again.schema_version() == store_module.SCHEMA_VERSION
        store.add_agent("pos-1", now_ms=MS)
        assert [agent.id for agent in again.agents()] == ["pos-1"]
    finally:
        again.close()


def test_two_stores_on_one_database_store_a_batch_once_and_never_reuse_a_number(
    store: Store, location: str
) -> None:
    """Two collectors: one is mid-transaction holding (pos-1, b, 0) when the other receives the same
    batch (the agent retried through the other one) and the next; the retry is a no-op, the next
    batch's samples get numbers after the first one's."""
    store.add_agent("pos-1", now_ms=MS)
    other = Store(location)
    first = Batch("pos-1", "b", 0, MS, samples=cad_round(MS, True, 0))
    second = Batch("pos-1", "b", 1, MS, samples=cad_round(MS + 1, True, 0))
    results: list[int | None] = []

    def other_collector() -> None:
        with other.writer() as writer:
            results.append(writer.insert_batch("pos-1", first, MS))
            results.append(writer.insert_batch("pos-1", second, MS))

    try:
        with store.writer() as writer:
            assert writer.insert_batch("pos-1", first, MS) is not None
            thread = threading.Thread(target=other_collector)
            thread.start()
            thread.join(0.3)  # it waits for this transaction (the row lock, or SQLite's write lock)
            assert thread.is_alive()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        other.close()
    assert results[0] is None
    assert results[1] is not None
    assert store.count("batches") == 2
    assert [row[0] for row in store.samples_after(0, 10)] == [1, 2, 3, 4]
    assert [row[3] for row in store.samples_after(0, 10)] == [MS, MS, MS + 1, MS + 1]


def test_a_change_made_through_another_store_is_noticed(store: Store, location: str) -> None:
    """What ``agents add`` or another collector commits moves data_version (the reload signal)."""
    before = store.data_version()
    other = Store(location)
    try:
        other.add_agent("pos-9", now_ms=MS)
    finally:
        other.close()
    assert store.data_version() != before


def test_alerts_silences_acks_and_sequence_totals_round_trip(store: Store) -> None:
    """What the alert engine and the board keep: the same answers from either database."""
    alerts = AlertStore(store)
    labels = {"alertname": "PositionSilent", "agent": "pos-1", "severity": "critical"}
    alert = Alert(
        labels=labels,
        annotations={"summary": "Position 1 is silent"},
        state=AlertState.FIRING,
        starts_at=T0,
        fingerprint=fingerprint(labels),
        scope="pos-1",
        fired_at=T0 + 1,
    )
    alerts.save_active(alert)
    alerts.save_status(alert.fingerprint, {"am": "ok"})
    alerts.record_alert(alert, MS)
    alerts.add_ack(Ack(alert.fingerprint, T0, "sup-anna", T0 + 5, "calling"), alert)
    ((back, status),) = alerts.active_alerts()
    assert (back.fingerprint, back.labels, back.fired_at, status) == (
        alert.fingerprint,
        labels,
        T0 + 1,
        {"am": "ok"},
    )
    assert [(a.by, a.comment) for a in alerts.acks()] == [("sup-anna", "calling")]
    assert [h["state"] for h in alerts.alert_history("pos-1")] == ["acknowledged", "firing"]
    silence = Silence("s1", (Matcher.make("agent", "=", "pos-1"),), T0 + 10, T0 + 3600, "it", "work", T0)
    alerts.add_silence(silence)
    alerts.expire_silence("s1", MS)  # before it started: it starts and ends now
    (expired,) = alerts.silences()
    assert (expired.starts_at, expired.ends_at) == (T0, T0)
    with pytest.raises(UnknownSilenceError):
        alerts.expire_silence("s1", MS)
    alerts.save_active(replace(alert, state=AlertState.RESOLVED, ends_at=T0 + 60))
    assert alerts.active_alerts() == []
    assert alerts.acks() == []
    store.add_agent("pos-1", now_ms=MS)
    with store.writer() as writer:
        for seq in (0, 3):  # 1 and 2 skipped
            writer.insert_batch("pos-1", Batch("pos-1", "b", seq, MS, samples=[]), MS)
        assert writer.seq_totals("pos-1") == store_module.SeqTotals(2, 2)
    assert store.seq_totals() == {"pos-1": store_module.SeqTotals(2, 2)}


def test_a_cursor_kept_in_the_database_is_read_back_by_the_next_store(store: Store, location: str) -> None:
    cursor = store.cursor("remote_write_cursor")
    assert cursor.load() == 0
    cursor.save(41)
    cursor.save(42)
    other = Store(location)  # the collector that takes over
    try:
        assert other.cursor("remote_write_cursor").load() == 42
    finally:
        other.close()
