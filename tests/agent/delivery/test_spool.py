"""One suite for every Spool implementation, plus what only the SQLite spool promises."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lifeline_agent.config import parse
from lifeline_agent.delivery.spool import MemorySpool, Spool, SqliteSpool, open_spool
from lifeline_wire import Batch, Sample

TS = 1_800_000_000_000


def batch(seq: int, priority: bool = False, boot: str = "boot1", samples: int = 1) -> Batch:
    return Batch(
        agent_id="ws-1",
        boot_id=boot,
        seq=seq,
        created_ms=TS + seq,
        samples=[Sample(name="lifeline_probe_success", value=1.0, ts_ms=TS + seq) for _ in range(samples)],
        priority=priority,
    )


SpoolFactory = Callable[..., Spool]


@pytest.fixture(params=["sqlite", "memory"])
def make_spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpoolFactory]:
    opened: list[Spool] = []

    def factory(max_bytes: int = 10_000_000) -> Spool:
        spool: Spool
        if request.param == "sqlite":
            spool = SqliteSpool(str(tmp_path / "spool.db"), max_bytes)
        else:
            spool = MemorySpool(max_bytes)
        opened.append(spool)
        return spool

    yield factory
    for spool in opened:
        spool.close()


def seqs(spool: Spool, limit: int = 100) -> list[int]:
    return [item.batch.seq for item in spool.pending(limit)]


def test_pending_is_oldest_first_and_limited(make_spool: SpoolFactory) -> None:
    spool = make_spool()
    for seq in range(5):
        spool.append(batch(seq))
    assert seqs(spool) == [0, 1, 2, 3, 4]
    assert seqs(spool, 2) == [0, 1]
    assert spool.depth() == 5
    assert spool.pending(1)[0].batch == batch(0)


def test_priority_batches_jump_the_queue(make_spool: SpoolFactory) -> None:
    spool = make_spool()
    spool.append(batch(0))
    spool.append(batch(1))
    spool.append(batch(2, priority=True))
    spool.append(batch(3))
    spool.append(batch(4, priority=True))
    assert seqs(spool) == [2, 4, 0, 1, 3]


def test_ack_deletes_only_what_was_acked(make_spool: SpoolFactory) -> None:
    spool = make_spool()
    keys = [spool.append(batch(seq)) for seq in range(4)]
    spool.ack([keys[0], keys[2]])
    assert seqs(spool) == [1, 3]
    spool.ack([keys[0]])  # acking twice is harmless
    assert spool.depth() == 2
    spool.ack([])
    assert spool.depth() == 2


def test_appending_the_same_batch_twice_keeps_one(make_spool: SpoolFactory) -> None:
    spool = make_spool()
    first = spool.append(batch(0))
    assert spool.append(batch(0)) == first
    assert spool.depth() == 1


def test_size_bound_drops_oldest_counts_and_warns_once(
    make_spool: SpoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    one = len(__import__("lifeline_wire").encode(batch(0, samples=20)))
    spool = make_spool(max_bytes=one * 3)
    spool.append(batch(0, priority=True, samples=20))
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.delivery.spool"):
        for seq in range(1, 7):
            spool.append(batch(seq, samples=20))
    assert spool.size_bytes() <= one * 3
    # The priority batch (a state change) outlives ordinary samples; the newest always stays.
    assert seqs(spool) == [0, 5, 6]
    assert spool.dropped == 4
    warnings = [r for r in caplog.records if "over its bound" in r.getMessage()]
    assert len(warnings) == 1


def test_sqlite_spool_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    spool = SqliteSpool(path)
    for seq in range(3):
        spool.append(batch(seq, priority=seq == 2))
    spool.ack([spool.pending(1)[0].key])
    size = spool.size_bytes()
    spool.close()
    again = SqliteSpool(path)
    try:
        assert seqs(again) == [0, 1]
        assert again.size_bytes() == size
        mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        again.close()


_APPENDER = """
import sys
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_wire import Batch, Sample
spool = SqliteSpool(sys.argv[1])
seq = 0
while True:
    samples = [Sample(name="lifeline_probe_success", value=1.0, ts_ms=1_800_000_000_000) for _ in range(50)]
    spool.append(Batch(agent_id="ws-1", boot_id="b", seq=seq, created_ms=1_800_000_000_000, samples=samples))
    print(seq, flush=True)  # only after the commit returned
    seq += 1
"""


@pytest.mark.system
def test_kill_9_mid_append_keeps_every_committed_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, path], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    committed: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            committed.append(int(line))
            if len(committed) == 40:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            committed += [int(line) for line in proc.stdout.read().split()]
    spool = SqliteSpool(path)
    try:
        stored = seqs(spool, 10_000)
    finally:
        spool.close()
    assert set(committed) <= set(stored)
    # Nothing half-written: every stored batch decodes, and they are contiguous from 0.
    assert stored == list(range(len(stored)))
    assert len(stored) >= 40


def test_a_batch_that_no_longer_decodes_is_set_aside_not_deleted_and_holds_nothing_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "spool.db")
    spool = SqliteSpool(path)
    spool.append(batch(0))
    # Built in memory nothing checks a label value's length; reading it back, the contract does
    # (as for a batch an older agent wrote before the contract grew that limit).
    long_label = Sample(name="lifeline_probe_success", value=1.0, ts_ms=TS, labels={"target": "x" * 300})
    spool.append(Batch(agent_id="ws-1", boot_id="boot1", seq=1, created_ms=TS + 1, samples=[long_label]))
    spool.append(batch(2))
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.spool"):
        assert seqs(spool) == [0, 2]
        assert seqs(spool) == [0, 2]
    assert spool.unreadable == 1
    assert spool.depth() == 2
    assert len([r for r in caplog.records if "cannot be read back" in r.getMessage()]) == 1
    spool.close()
    with sqlite3.connect(path) as db:
        kept = db.execute("SELECT boot_id, seq, reason FROM unreadable").fetchall()
    assert [(boot, seq) for boot, seq, _reason in kept] == [("boot1", 1)]
    assert "samples[0].labels" in kept[0][2]
    reopened = SqliteSpool(path)
    try:
        assert seqs(reopened) == [0, 2]
    finally:
        reopened.close()


def test_the_spool_takes_both_bounds_from_the_config(tmp_path: Path) -> None:
    config = parse(
        {
            "agent": {"id": "pos-1", "state_dir": str(tmp_path)},
            "spool": {"max_bytes": "5MB", "max_age": "2h"},
        }
    )
    spool = open_spool(config)
    try:
        assert spool.max_age == 7200.0
        assert spool.path == str(tmp_path / "spool.db")
        assert spool.max_bytes == 5_000_000
    finally:
        spool.close()
