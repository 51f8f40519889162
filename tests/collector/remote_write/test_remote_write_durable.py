"""Durable mode: a cursor over a real SQLite samples table survives a collector restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from collector_kit import durable_config, replay

from lifeline_collector.remote_write.durable import DurableRemoteWriter, FileCursor
from lifeline_collector.remote_write.prompb import Labels, series_labels

if TYPE_CHECKING:
    from conftest import Receiver

pytestmark = pytest.mark.system

T0 = 1_700_000_000_000


class SqliteSamples:
    """A minimal samples table shaped like the collector store's: an id that only grows."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS samples ("
            "id INTEGER PRIMARY KEY AUTOINCREMENT, labels TEXT NOT NULL, value REAL NOT NULL, ts_ms INTEGER NOT NULL)"
        )

    def add(self, agent: str, count: int, start: int) -> list[tuple[Labels, float, int]]:
        labels = series_labels("lifeline_probe_rtt_seconds", {"agent": agent, "target": "cad"})
        rows = [(labels, float(index), start + index * 1000) for index in range(count)]
        with self.db:
            self.db.executemany(
                "INSERT INTO samples (labels, value, ts_ms) VALUES (?, ?, ?)",
                [(json.dumps(labels), value, ts) for labels, value, ts in rows],
            )
        return rows

    def samples_after(self, cursor: int, limit: int) -> list[tuple[int, Labels, float, int]]:
        rows = self.db.execute(
            "SELECT id, labels, value, ts_ms FROM samples WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        ).fetchall()
        return [(row[0], tuple(tuple(pair) for pair in json.loads(row[1])), row[2], row[3]) for row in rows]

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def store(tmp_path: Path) -> SqliteSamples:
    samples = SqliteSamples(tmp_path / "store.sqlite")
    yield samples  # type: ignore[misc]
    samples.close()


def test_restart_resumes_after_the_last_sample_sent(
    receiver: Receiver, store: SqliteSamples, tmp_path: Path
) -> None:
    cursor_path = tmp_path / "state" / "remote_write.cursor"
    first = store.add("pos-01", 10, T0)
    writer = DurableRemoteWriter(durable_config(receiver.url, cursor_path), store)
    replay(writer)
    sent = [s for r in receiver.requests for s in r.samples]
    assert sent == first
    assert max(len(r.samples) for r in receiver.requests) == 4  # max_samples_per_send
    assert cursor_path.read_text().strip() == "10"

    # "Restart": a new writer over the same store and cursor file sends only what is new.
    receiver.requests.clear()
    later = store.add("pos-02", 3, T0 + 60_000)
    restarted = DurableRemoteWriter(durable_config(receiver.url, cursor_path), store)
    replay(restarted)
    assert [s for r in receiver.requests for s in r.samples] == later
    assert cursor_path.read_text().strip() == "13"
    assert (restarted.stats.sent, restarted.stats.failed) == (3, 0)


def test_unsent_samples_wait_in_the_store_for_the_next_run(
    receiver: Receiver, unused_url: str, store: SqliteSamples, tmp_path: Path
) -> None:
    cursor_path = tmp_path / "remote_write.cursor"
    rows = store.add("pos-03", 6, T0)
    down = DurableRemoteWriter(durable_config(unused_url, cursor_path), store)
    replay(down, drain_timeout=0.3)  # receiver unreachable the whole time
    assert down.stats.sent == 0
    assert down.stats.retries >= 1
    assert not cursor_path.exists()

    up = DurableRemoteWriter(durable_config(receiver.url, cursor_path), store)
    replay(up)
    assert [s for r in receiver.requests for s in r.samples] == rows
    assert cursor_path.read_text().strip() == "6"


def test_wake_sends_samples_stored_while_running(
    receiver: Receiver, store: SqliteSamples, tmp_path: Path
) -> None:
    config = durable_config(receiver.url, tmp_path / "cursor")

    async def scenario() -> DurableRemoteWriter:
        writer = DurableRemoteWriter(config, store)
        writer.start()
        await asyncio.sleep(0.05)  # the writer is idle, waiting for news
        store.add("pos-04", 2, T0)
        writer.wake()
        while writer.stats.sent < 2:
            await asyncio.sleep(0.01)
        await writer.drain()
        return writer

    writer = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert writer.cursor == 2


def test_rejected_samples_advance_the_cursor_and_are_counted(
    receiver: Receiver, store: SqliteSamples, tmp_path: Path
) -> None:
    receiver.responder = lambda _request: (400, {}, "out of bounds")
    cursor_path = tmp_path / "cursor"
    store.add("pos-05", 1, T0)
    writer = DurableRemoteWriter(durable_config(receiver.url, cursor_path), store)
    replay(writer)
    assert len(receiver.requests) == 1
    assert (writer.stats.sent, writer.stats.failed) == (0, 1)
    assert cursor_path.read_text().strip() == "1"


def test_file_cursor_survives_garbage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cursor"
    cursor = FileCursor(path)
    assert cursor.load() == 0
    cursor.save(42)
    assert FileCursor(path).load() == 42
    path.write_text("not a number")
    assert FileCursor(path).load() == 0
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / ".cursor.tmp").exists()
