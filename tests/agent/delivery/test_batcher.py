"""Batcher numbering and spooling."""

from __future__ import annotations

import asyncio
import re

from lifeline_agent.delivery.batcher import Batcher, new_boot_id
from lifeline_agent.delivery.spool import MemorySpool
from lifeline_agent.errors import SpoolError
from lifeline_agent.recorder import Recorder
from lifeline_wire import Batch
from lifeline_wire.schema import ID_RE, MAX_SAMPLES_PER_BATCH

LABELS = {"target": "cad", "role": "cad", "path": "auto", "kind": "tcp"}


def test_boot_id_is_a_wire_identifier_and_random() -> None:
    ids = {new_boot_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(re.match(ID_RE, boot) for boot in ids)


def test_batches_are_numbered_from_zero_and_spooled_before_the_hook() -> None:
    recorder, spool = Recorder(), MemorySpool()
    depth_when_hooked: list[int] = []
    batcher = Batcher(
        "ws-1", "boot1", recorder, spool, after_spool=lambda: depth_when_hooked.append(spool.depth())
    )

    async def main() -> list[list[Batch]]:
        out = []
        for value in (1, 0, 1):
            recorder.sample("lifeline_probe_success", value, LABELS)
            out.append(await batcher.flush())
        out.append(await batcher.flush(priority=True))  # nothing recorded: still a (heartbeat) batch
        return out

    flushed = asyncio.run(main())
    assert [[b.seq for b in group] for group in flushed] == [[0], [1], [2], [3]]
    assert [len(group[0].every_sample()) for group in flushed] == [1, 1, 1, 0]
    assert [group[0].priority for group in flushed] == [False, False, False, True]
    assert depth_when_hooked == [1, 2, 3, 4]
    assert [item.batch.seq for item in spool.pending(10)] == [3, 0, 1, 2]


def test_oversized_buffer_is_cut_into_several_batches() -> None:
    recorder = Recorder()
    for _ in range(MAX_SAMPLES_PER_BATCH + 5):
        recorder.sample("lifeline_probe_success", 1, LABELS)
    batches = Batcher("ws-1", "boot1", recorder, MemorySpool()).cut()
    assert [(b.seq, b.sample_count()) for b in batches] == [(0, MAX_SAMPLES_PER_BATCH), (1, 5)]
    assert [len(b.every_sample()) for b in batches] == [MAX_SAMPLES_PER_BATCH, 5]


class FlakySpool(MemorySpool):
    """A spool whose disk is full for the first ``failures`` appends."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def append(self, batch: Batch) -> int:
        if self.failures:
            self.failures -= 1
            raise SpoolError("spool.db", "database or disk is full")
        return super().append(batch)


def test_a_failed_spool_write_keeps_the_batch_for_the_next_flush() -> None:
    recorder, spool = Recorder(), FlakySpool(failures=1)
    batcher = Batcher("ws-1", "boot1", recorder, spool)
    recorder.sample("lifeline_probe_success", 1, LABELS)
    assert asyncio.run(batcher.flush()) == []
    recorder.sample("lifeline_probe_success", 0, LABELS)
    spooled = asyncio.run(batcher.flush())
    assert [b.seq for b in spooled] == [0, 1]
    assert [b.every_sample()[0].value for b in spooled] == [1.0, 0.0]
