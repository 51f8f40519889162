"""The priority lane: a state change goes first, alone, at once — even behind 30 minutes of backlog."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_kit import Answer, LoopbackCollector, collector_section, make_shipper, run_until, sample_batch

from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_wire.retry import Backoff

# 30 minutes at the default 5 s batch interval; ~60 samples a batch (a handful of 1 Hz targets).
BACKLOG = 30 * 60 // 5
SAMPLES = 60


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[SqliteSpool]:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    yield spool
    spool.close()


def backlog(spool: SqliteSpool) -> list[tuple[str, int]]:
    for seq in range(BACKLOG):
        spool.append(sample_batch(seq, samples=SAMPLES))
    return [("boot1", seq) for seq in range(BACKLOG)]


def test_a_state_change_behind_30_minutes_of_backlog_reaches_the_collector_first(
    collector: LoopbackCollector, spool: SqliteSpool
) -> None:
    old = backlog(spool)
    change = sample_batch(BACKLOG, priority=True)
    spool.append(change)
    shipper = make_shipper(collector_section(collector.url), spool)
    run_until(shipper, lambda: spool.depth() == 0, limit=120.0)
    assert collector.requests[0] == [("boot1", BACKLOG)]  # alone, in the first request
    assert collector.stored[0] == ("boot1", BACKLOG)
    assert collector.stored[1:] == old  # then the backlog, oldest first, each batch once
    assert collector.batches[0] == change


def test_a_state_change_during_a_drain_goes_in_the_next_request(
    collector: LoopbackCollector, spool: SqliteSpool
) -> None:
    backlog(spool)
    gate = threading.Event()

    def slow(_ids: list[tuple[str, int]]) -> None:
        gate.wait(10)  # hold each request until the test lets it go
        return None

    collector.always = slow
    shipper = make_shipper(collector_section(collector.url, max_batches_per_request=20), spool)

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        while len(collector.requests) < 3:  # the drain is under way
            gate.set()
            await asyncio.sleep(0.005)
            gate.clear()
        seen = len(collector.requests)  # requests that reached the collector before the change
        await asyncio.to_thread(spool.append, sample_batch(BACKLOG, priority=True))
        shipper.wake()
        gate.set()
        while spool.depth():
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await shipper.aclose()
        return seen

    seen = asyncio.run(main())
    where = next(i for i, ids in enumerate(collector.requests) if ("boot1", BACKLOG) in ids)
    # At most the request already in flight finishes first; then the change goes, alone.
    assert where in (seen, seen + 1)
    assert collector.requests[where] == [("boot1", BACKLOG)]
    assert sorted(collector.stored) == sorted([("boot1", s) for s in range(BACKLOG + 1)])


def test_a_state_change_cuts_a_long_backoff_short(collector: LoopbackCollector, spool: SqliteSpool) -> None:
    spool.append(sample_batch(0))
    collector.always = lambda _ids: Answer(503, b"down for maintenance")
    # Waits of 30–60 s after each failure: without the priority lane the change would wait too.
    shipper = make_shipper(
        collector_section(collector.url), spool, backoff=Backoff(initial=60.0, maximum=60.0)
    )

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        while not collector.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the shipper is now in its long wait
        collector.always = None  # the collector is back
        await asyncio.to_thread(spool.append, sample_batch(1, priority=True))
        shipper.wake()
        while ("boot1", 1) not in collector.stored:  # the pytest timeout guards this
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await shipper.aclose()

    asyncio.run(main())
    assert collector.stored[0] == ("boot1", 1)
    assert collector.requests[:2] == [[("boot1", 0)], [("boot1", 1)]]  # the failed one, then the change


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A listener that accepts connections and never answers: a path whose packets vanish."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_state_change_does_not_wait_for_a_hanging_path_to_time_out(
    collector: LoopbackCollector, spool: SqliteSpool, hanging_endpoint: str
) -> None:
    """The tunnel endpoint hangs (the cut took the tunnel down): the priority batch also starts
    over the next path after the stagger and arrives there while the first attempt still hangs."""
    spool.append(sample_batch(0, priority=True))
    shipper = make_shipper(
        collector_section(hanging_endpoint, collector.url, timeout=30.0), spool, priority_stagger=0.05
    )
    run_until(shipper, lambda: spool.depth() == 0, limit=20.0)
    assert collector.stored == [("boot1", 0)]
    assert shipper.paths.current is not None
    assert shipper.paths.current.base == collector.url
    # Delivered while the hanging attempt had not yet failed (it was cancelled, not timed out).
    assert shipper.stats.failures["network"] == 0
    assert shipper.paths.state(shipper.paths.routes()[0]).failures == 0


def test_ordinary_batches_keep_to_one_path_at_a_time(
    collector: LoopbackCollector, spool: SqliteSpool, hanging_endpoint: str
) -> None:
    """Only state changes race: the bulk of the data never goes out twice over metered paths."""
    spool.append(sample_batch(0))
    shipper = make_shipper(collector_section(hanging_endpoint, collector.url, timeout=0.5), spool)
    run_until(shipper, lambda: spool.depth() == 0, limit=20.0)
    assert collector.stored == [("boot1", 0)]
    assert shipper.stats.failures["network"] == 1  # the first path timed out before the second was tried
