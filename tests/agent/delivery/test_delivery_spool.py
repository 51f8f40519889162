"""The spool's bounds, its corrupt-file handling and its bounded memory fallback."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from delivery_kit import TS, sample_batch

from lifeline_agent.delivery import spool as spool_module
from lifeline_agent.delivery.spool import MemorySpool, Spool, SqliteSpool
from lifeline_wire import encode


class StepClock:
    """Wall time the test sets; the spool reads ``time()`` for batch ages."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def time(self) -> float:
        return self.ms / 1000

    def monotonic(self) -> float:
        return self.ms / 1000


SpoolFactory = Callable[..., Spool]


@pytest.fixture(params=["sqlite", "memory"])
def make_spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpoolFactory]:
    opened: list[Spool] = []

    def factory(**options: object) -> Spool:
        spool: Spool
        if request.param == "sqlite":
            spool = SqliteSpool(str(tmp_path / "spool.db"), **options)  # type: ignore[arg-type]
        else:
            spool = MemorySpool(**options)  # type: ignore[arg-type]
        opened.append(spool)
        return spool

    yield factory
    for spool in opened:
        spool.close()


def seqs(spool: Spool) -> list[int]:
    return [item.batch.seq for item in spool.pending(10_000)]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "over its bound" in r.getMessage()]


def test_age_bound_drops_the_oldest_counts_and_warns_once(
    make_spool: SpoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lifeline_agent.delivery.spool")
    clock = StepClock(TS)
    spool = make_spool(max_age=60.0, clock=clock)
    for seq in range(6):  # one batch every 20 s: created at TS, TS+20 s, … TS+100 s
        clock.ms = TS + seq * 20_000
        spool.append(sample_batch(seq, created_ms=clock.ms))
    # At TS+100 s everything created before TS+40 s is past the 60 s bound: seqs 0 and 1.
    assert seqs(spool) == [2, 3, 4, 5]
    assert spool.dropped == 2
    clock.ms = TS + 200_000
    spool.append(sample_batch(6, created_ms=clock.ms))
    assert seqs(spool) == [6]
    assert spool.dropped == 6
    # One warning for the whole episode, not one per dropped batch; it names the bound.
    (warning,) = warnings_of(caplog)
    assert "spool.max_age = 60s" in warning.getMessage()


def test_each_episode_of_drops_warns_once_and_its_end_is_logged(
    make_spool: SpoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    one = len(encode(sample_batch(0, samples=20)))
    spool = make_spool(max_bytes=one * 4 + 200)  # four batches fit, whatever digits their seqs have
    with caplog.at_level(logging.INFO, logger="lifeline_agent.delivery.spool"):
        for seq in range(12):
            spool.append(sample_batch(seq, samples=20))
        assert spool.dropped == 8
        assert len(warnings_of(caplog)) == 1
        spool.ack([item.key for item in spool.pending(100)])
        assert any("back within its bounds; 8 batches" in r.getMessage() for r in caplog.records)
        for seq in range(12, 20):
            spool.append(sample_batch(seq, samples=20))
    assert spool.dropped == 12
    assert seqs(spool) == [16, 17, 18, 19]
    assert len(warnings_of(caplog)) == 2  # one per episode, not one per dropped batch


def test_sqlite_spool_writes_with_synchronous_full(tmp_path: Path) -> None:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    try:
        assert spool._db is not None
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        spool.close()


def _spool_with(path: Path, count: int) -> None:
    spool = SqliteSpool(str(path))
    for seq in range(count):
        spool.append(sample_batch(seq, samples=30))
    spool.close()  # checkpoints the WAL into the main file


def _damage_garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database\n" * 200)


def _damage_truncate(path: Path) -> None:
    _spool_with(path, 400)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _damage_pages(path: Path) -> None:
    _spool_with(path, 400)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        for offset in range(4096 * 3, size - 4096, 4096 * 7):  # scribble over many b-tree pages
            handle.seek(offset)
            handle.write(b"\xff" * 64)


@pytest.mark.parametrize("damage", [_damage_garbage, _damage_truncate, _damage_pages])
def test_a_corrupt_file_is_set_aside_and_a_fresh_spool_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "spool.db"
    damage(path)
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.spool"):
        spool = SqliteSpool(str(path))
    try:
        aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
        assert len(aside) == 1
        assert aside[0].startswith("spool.db.corrupt-")
        assert spool.set_aside == [str(tmp_path / aside[0])]
        assert any("is corrupt" in r.getMessage() and aside[0] in r.getMessage() for r in caplog.records)
        # Whatever could still be read came along, and every batch in the new spool is intact.
        salvaged = seqs(spool)
        assert len(salvaged) == spool.salvaged
        assert all(item.batch == sample_batch(item.batch.seq, samples=30) for item in spool.pending(1000))
        spool.append(sample_batch(10_000))
        assert seqs(spool)[-1] == 10_000
        assert spool._db is not None
        assert spool._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        spool.close()


def test_disk_full_keeps_batches_in_bounded_memory_then_moves_them_to_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one = len(encode(sample_batch(0, samples=20)))
    spool = SqliteSpool(str(tmp_path / "spool.db"), memory_bytes=one * 5 + 300)
    try:
        keys = [spool.append(sample_batch(seq, samples=20)) for seq in range(3)]
        assert spool._db is not None
        pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
        spool._db.execute(f"PRAGMA max_page_count = {pages}")  # a real SQLITE_FULL from here on
        with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.spool"):
            for seq in range(3, 16):
                keys.append(spool.append(sample_batch(seq, samples=20)))
        assert spool.degraded
        errors = [r for r in caplog.records if "cannot be written" in r.getMessage()]
        assert len(errors) == 1
        # The last free bytes of the file may take a batch or two; the rest went to memory, which
        # holds 5: the oldest of those were dropped and counted.
        on_disk = [seq for seq, key in enumerate(keys) if key > 0]
        in_memory = len(keys) - len(on_disk)
        assert on_disk == list(range(len(on_disk)))
        assert in_memory > 5
        assert spool.dropped == in_memory - 5
        assert seqs(spool) == [*on_disk, 11, 12, 13, 14, 15]
        memory_keys = [item.key for item in spool.pending(100) if item.key < 0]
        assert len(memory_keys) == 5

        spool._db.execute("PRAGMA max_page_count = 1073741823")  # space again
        spool.append(sample_batch(16, samples=20))
        assert not spool.degraded
        assert seqs(spool) == [*on_disk, 11, 12, 13, 14, 15, 16]
        assert all(item.key > 0 for item in spool.pending(100))
        # Keys handed out while the batches were in memory still acknowledge them.
        spool.ack([*keys, *memory_keys])
        assert seqs(spool) == [16]
    finally:
        spool.close()
    again = SqliteSpool(str(tmp_path / "spool.db"))
    try:
        assert seqs(again) == [16]
    finally:
        again.close()


def test_a_spool_that_cannot_open_its_file_keeps_working_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(spool_module, "REOPEN_INTERVAL", 0.0)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.spool"):
        spool = SqliteSpool(str(blocker / "spool.db"))
    try:
        assert spool.degraded
        assert any("keeping new batches in memory" in r.getMessage() for r in caplog.records)
        for seq in range(3):
            spool.append(sample_batch(seq))
        assert seqs(spool) == [0, 1, 2]  # still deliverable
        blocker.unlink()
        spool.append(sample_batch(3))  # the directory can be made now: everything moves to disk
        assert not spool.degraded
        assert (blocker / "spool.db").exists()
        assert seqs(spool) == [0, 1, 2, 3]
    finally:
        spool.close()
    again = SqliteSpool(str(blocker / "spool.db"))
    try:
        assert seqs(again) == [0, 1, 2, 3]
    finally:
        again.close()


def test_the_spool_file_is_a_plain_sqlite_database(tmp_path: Path) -> None:
    """IT staff can inspect a spool with the sqlite3 shell: one row per batch, JSON bodies."""
    path = tmp_path / "spool.db"
    _spool_with(path, 3)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT boot_id, seq, priority FROM batches ORDER BY id").fetchall()
    assert rows == [("boot1", 0, 0), ("boot1", 1, 0), ("boot1", 2, 0)]
