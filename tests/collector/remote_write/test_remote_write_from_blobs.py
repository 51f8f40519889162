"""Durable remote-write over the real store: batches stored as blobs go out sample by sample, each
with its own timestamp, once; a cursor that stopped inside a batch resumes there after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lifeline_collector.remote_write import DurableRemoteWriter, RemoteWriteConfig
from lifeline_collector.store import Store
from lifeline_wire import Batch, Sample

if TYPE_CHECKING:
    from conftest import Receiver

pytestmark = pytest.mark.system

T0 = 1_700_000_000_000
CAD = {"target": "cad", "role": "cad"}


def _config(url: str, cursor: Path, per_send: int) -> RemoteWriteConfig:
    return RemoteWriteConfig(
        url=url,
        timeout=2.0,
        batch_wait=0.02,
        min_backoff=0.01,
        max_backoff=0.05,
        max_samples_per_send=per_send,
        cursor_file=str(cursor),
    )


async def _run_once(writer: DurableRemoteWriter) -> None:
    writer.start()
    await writer.drain(10.0)


def _store_batch(store: Store, seq: int, start: int, rounds: int) -> list[tuple[float, int]]:
    samples = [Sample("lifeline_probe_success", float(i % 2), start + 1000 * i, CAD) for i in range(rounds)]
    with store.writer() as writer:
        batch = Batch(agent_id="pos-1", boot_id="b1", seq=seq, created_ms=start, samples=samples)
        assert writer.insert_batch("pos-1", batch, start) is not None
        assert writer.insert_batch("pos-1", batch, start) is None  # a retry adds nothing to send
    return [(s.number, s.ts_ms) for s in samples]


def test_blobs_go_out_sample_by_sample_and_resume_inside_a_batch(receiver: Receiver, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "collector.db"))
    cursor = tmp_path / "remote_write.cursor"
    try:
        store.add_agent("pos-1", site="north", now_ms=T0)
        first = _store_batch(store, 0, T0, 5) + _store_batch(store, 1, T0 + 5000, 5)
        writer = DurableRemoteWriter(_config(receiver.url, cursor, 3), store)
        asyncio.run(_run_once(writer))
        sent = [s for r in receiver.requests for s in r.samples]
        assert [(value, ts) for _, value, ts in sent] == first
        assert {labels for labels, _, _ in sent} == {
            (
                ("__name__", "lifeline_probe_success"),
                ("agent", "pos-1"),
                ("role", "cad"),
                ("site", "north"),
                ("target", "cad"),
            )
        }
        assert cursor.read_text().strip() == "10"

        # A restart whose cursor stopped inside the second batch sends the rest of it, then the new one.
        receiver.requests.clear()
        cursor.write_text("7\n")
        later = _store_batch(store, 2, T0 + 10_000, 2)
        restarted = DurableRemoteWriter(_config(receiver.url, cursor, 100), store)
        asyncio.run(_run_once(restarted))
        assert [(value, ts) for r in receiver.requests for _, value, ts in r.samples] == first[7:] + later
        assert cursor.read_text().strip() == "12"
    finally:
        store.close()
