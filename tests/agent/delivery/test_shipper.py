"""The shipper against a small real HTTP collector on loopback: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shipping import TOKEN, drain, make_shipper

from lifeline_agent.config import AgentSection, CollectorEndpoint, CollectorSection
from lifeline_agent.delivery.shipper import Shipper
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_agent.errors import RefusedDelivery, RetryableDelivery
from lifeline_wire import SCHEMA_VERSION, Batch, IngestResponse, ItemResult, Sample, encode

TS = 1_800_000_000_000
# The fake collector and its Reply live in conftest.py (shared with the service tests).
FakeCollector = Any
Reply = Any


@pytest.fixture
def collector(fake_collector: FakeCollector) -> FakeCollector:
    return fake_collector


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[SqliteSpool]:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    yield spool
    spool.close()


def fill(spool: SqliteSpool, count: int, boot: str = "boot1") -> list[tuple[str, int]]:
    for seq in range(count):
        sample = Sample(name="lifeline_probe_success", value=1.0, ts_ms=TS + seq, labels={})
        spool.append(Batch(agent_id="ws-1", boot_id=boot, seq=seq, created_ms=TS + seq, samples=[sample]))
    return [(boot, seq) for seq in range(count)]


def test_per_item_results_accepted_duplicate_rejected(
    collector: FakeCollector, spool: SqliteSpool, caplog: pytest.LogCaptureFixture
) -> None:
    ids = fill(spool, 5)
    collector.stored.append(ids[1])  # already there from an earlier try
    collector.reject[ids[3]] = "samples[0].name: not in the catalog"
    shipper = make_shipper(collector.url, spool)
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.shipper"):
        drain(shipper, spool)
    assert spool.depth() == 0
    assert sorted(collector.stored) == sorted(set(ids) - {ids[3]})
    assert len(collector.stored) == len(set(collector.stored))
    assert (shipper.stats.sent, shipper.stats.rejected) == (4, 1)
    assert any("not in the catalog" in r.getMessage() for r in caplog.records)
    assert collector.requests[0][2] == f"Bearer {TOKEN}"


def test_batches_the_answer_does_not_name_stay_spooled(collector: FakeCollector, spool: SqliteSpool) -> None:
    ids = fill(spool, 5)
    answered = {ids[0], ids[3]}

    def partial(batch_ids: list[tuple[str, int]]) -> Any:
        # The collector took only some (a group commit cut short, a replica that holds part):
        # it names those, and the others must be sent again, not deleted.
        results = [ItemResult(b, s, "accepted") for b, s in batch_ids if (b, s) in answered]
        collector.stored.extend(key for key in batch_ids if key in answered)
        return collector.Reply(200, encode(IngestResponse(results=results)))

    collector.script = [partial]
    shipper = make_shipper(collector.url, spool)
    (first,) = ship_rounds(shipper, 1)
    assert first.progressed
    left = [(item.batch.boot_id, item.batch.seq) for item in spool.pending(10)]
    assert left == [ids[1], ids[2], ids[4]]
    drain(shipper, spool)
    assert sorted(collector.stored) == ids  # every batch arrived, none twice
    assert shipper.stats.sent == 5


def test_500_then_200_retries_and_loses_nothing(collector: FakeCollector, spool: SqliteSpool) -> None:
    ids = fill(spool, 3)
    collector.script = [lambda _ids: collector.Reply(500, b"database is locked")]
    shipper = make_shipper(collector.url, spool)
    drain(shipper, spool)
    assert collector.stored == ids
    assert len(collector.requests) == 2
    assert shipper.stats.failures["server"] == 1


def test_429_honours_retry_after(collector: FakeCollector, spool: SqliteSpool) -> None:
    ids = fill(spool, 2)
    collector.script = [lambda _ids: collector.Reply(429, b"slow down", {"Retry-After": "1"})]
    shipper = make_shipper(collector.url, spool)
    drain(shipper, spool)
    assert collector.stored == ids
    (first, *_), (second, *_) = collector.requests
    assert second - first >= 1.0  # waited at least what the collector asked, not the 10 ms backoff
    assert shipper.stats.failures["throttled"] == 1


def test_413_splits_until_it_fits(collector: FakeCollector, spool: SqliteSpool) -> None:
    ids = fill(spool, 7)
    too_big = lambda batch_ids: collector.Reply(413, b"body too large") if len(batch_ids) > 2 else None  # noqa: E731
    collector.script = [too_big] * 20
    shipper = make_shipper(collector.url, spool, per_request=7)
    drain(shipper, spool)
    assert sorted(collector.stored) == ids
    assert len(collector.stored) == 7
    # 7 → 413 → 3 + 4; 3 → 413 → 1 + 2; 4 → 413 → 2 + 2.
    assert [len(batch_ids) for _t, batch_ids, _a in collector.requests] == [7, 3, 1, 2, 4, 2, 2]


class SteppedClock:
    """Monotonic time that moves only when the test says (wall time for timestamps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return TS / 1000 + self.now

    def monotonic(self) -> float:
        return self.now


def test_a_batch_refused_on_its_own_is_kept_held_back_and_tried_again_later(
    collector: FakeCollector, spool: SqliteSpool
) -> None:
    ids = fill(spool, 3)
    too_large = lambda batch_ids: collector.Reply(413, b"too large") if ids[0] in batch_ids else None  # noqa: E731
    collector.script = [too_large] * 3
    clock = SteppedClock()
    shipper = Shipper(
        AgentSection(id="ws-1"),
        CollectorSection(endpoints=(CollectorEndpoint(collector.url),), max_batches_per_request=2),
        spool,
        TOKEN,
        clock=clock,
        refused_pause=60.0,
        route_file="/nonexistent",
    )
    first, second, third = ship_rounds(shipper, 3)
    # [0, 1] → 413 → 0 refused, 1 stored: 0 is held back, so 2 goes alone, and then only 0 is left.
    sent = [batch_ids for _t, batch_ids, _a in collector.requests]
    assert sent == [ids[:2], ids[:1], ids[1:2], ids[2:]]
    assert (first.progressed, second.progressed) == (True, True)
    assert 59.0 < third.wait <= 60.0  # nothing to send until the hold ends
    assert spool.depth() == 1
    clock.now += 60.0
    (fourth,) = ship_rounds(shipper, 1)  # tried again, and taken this time
    assert fourth.progressed
    assert collector.stored == [ids[1], ids[2], ids[0]]
    assert shipper.stats.rejected == 0


def test_422_with_a_per_batch_answer_deletes_only_the_batch_it_names(
    collector: FakeCollector, spool: SqliteSpool
) -> None:
    ids = fill(spool, 4)
    bad = ids[2]

    def answer(batch_ids: list[tuple[str, int]]) -> Any:
        results = [
            ItemResult(b, s, "rejected", "samples[0].value: must be finite") if (b, s) == bad else None
            for b, s in batch_ids
        ]
        body = encode(IngestResponse(results=[r for r in results if r is not None]))
        return collector.Reply(422, body)

    collector.script = [answer]
    shipper = make_shipper(collector.url, spool)
    drain(shipper, spool)
    assert sorted(collector.stored) == [i for i in ids if i != bad]
    assert shipper.stats.rejected == 1


def test_422_in_the_collectors_error_form_isolates_the_bad_batch_and_keeps_it(
    collector: FakeCollector, spool: SqliteSpool
) -> None:
    ids = fill(spool, 4)
    bad = ids[2]
    collector.script = [
        lambda batch_ids: (
            collector.Reply(422, b'{"error": "$.batches[0].seq: bad"}') if bad in batch_ids else None
        )
    ] * 10
    shipper = make_shipper(collector.url, spool)
    ship_rounds(shipper, 2)
    assert sorted(collector.stored) == [i for i in ids if i != bad]
    assert spool.depth() == 1  # the error form names a field, not a batch: nothing is deleted
    assert shipper.stats.rejected == 0


FOREIGN_ANSWERS = [
    (422, b"<html><body><h1>422 Unprocessable Entity</h1>blocked by policy</body></html>"),
    (422, b'{"error": "request blocked by web application firewall", "field": "body"}'),
    (422, b'{"results": [], "blocked": true}'),
    (400, b"Bad Request"),
    (413, b"<html>413 Request Entity Too Large</html>"),
    (422, b""),
]


@pytest.mark.parametrize(("status", "body"), FOREIGN_ANSWERS)
def test_a_proxy_refusing_everything_deletes_nothing(
    collector: FakeCollector, spool: SqliteSpool, caplog: pytest.LogCaptureFixture, status: int, body: bytes
) -> None:
    fill(spool, 16)
    collector.script = [lambda _ids: collector.Reply(status, body)] * 1000
    shipper = make_shipper(collector.url, spool, refused_pause=3600.0)
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.delivery.shipper"):
        outcomes = ship_rounds(shipper, 3)
    assert spool.depth() == 16
    assert collector.stored == []
    assert shipper.stats.rejected == 0
    assert not any(o.progressed for o in outcomes)
    assert all(o.wait > 3000 for o in outcomes)  # the path rests; nothing is sent again soon
    # 16, then 8 → 4 → 2 → 1 refused with their other halves sent whole: 1 + 2·4 requests.
    assert len(collector.requests) == 9
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # the refused path, and no path left: each said once
    assert not any("deleted" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [200, 422, 502])
def test_an_answer_that_cannot_be_decoded_is_retried_and_does_not_stop_delivery(
    collector: FakeCollector, spool: SqliteSpool, status: int
) -> None:
    ids = fill(spool, 3)
    broken = collector.Reply(status, b"not gzip at all", {"Content-Encoding": "gzip"})
    collector.script = [lambda _ids: broken] * 2
    shipper = make_shipper(collector.url, spool)
    drain(shipper, spool)  # the loop carries on past the answers it cannot read
    assert collector.stored == ids
    assert len(collector.requests) == 3


def ship_rounds(shipper: Any, rounds: int) -> list[Any]:
    """``rounds`` calls of ship_pending, one after the other (no waiting between them)."""

    async def main() -> list[Any]:
        out = [await shipper.ship_pending() for _ in range(rounds)]
        await shipper.aclose()
        return out

    return asyncio.run(main())


def test_401_is_not_retried_and_keeps_everything(collector: FakeCollector, spool: SqliteSpool) -> None:
    fill(spool, 3)
    collector.script = [lambda _ids: collector.Reply(401, b'{"error": "unauthorized"}')] * 10
    shipper = make_shipper(collector.url, spool, refused_pause=60.0)

    async def main() -> None:
        with pytest.raises(RefusedDelivery) as caught:
            await shipper.ship_once(shipper.endpoints()[0])
        assert caught.value.status == 401
        assert "unauthorized" in caught.value.reason
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        while len(collector.requests) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # a retrying shipper would have sent many more by now
        stop.set()
        await task
        await shipper.aclose()

    asyncio.run(main())
    assert len(collector.requests) == 2  # one per call: ship_once, then the loop's first try
    assert spool.depth() == 3
    assert collector.stored == []
    assert shipper.stats.failures["auth"] == 1


def test_malformed_200_keeps_the_batches(collector: FakeCollector, spool: SqliteSpool) -> None:
    fill(spool, 2)
    collector.script = [lambda _ids: collector.Reply(200, b"<html>proxy</html>")]
    shipper = make_shipper(collector.url, spool)

    async def once() -> None:
        with pytest.raises(RetryableDelivery):
            await shipper.ship_once(shipper.endpoints()[0])
        await shipper.aclose()

    asyncio.run(once())
    assert spool.depth() == 2


def test_collector_down_keeps_the_batches(spool: SqliteSpool, closed_port: int) -> None:
    fill(spool, 2)
    shipper = make_shipper(f"http://127.0.0.1:{closed_port}", spool)

    async def once() -> None:
        with pytest.raises(RetryableDelivery) as caught:
            await shipper.ship_once(shipper.endpoints()[0])
        assert caught.value.status is None
        await shipper.aclose()

    asyncio.run(once())
    assert spool.depth() == 2


def test_envelope_carries_site_and_position(collector: FakeCollector, spool: SqliteSpool) -> None:
    seen: list[bytes] = []
    original = collector.handle

    def spy(path: str, auth: str, body: bytes) -> Reply:
        seen.append(body)
        return original(path, auth, body)

    collector.handle = spy  # type: ignore[method-assign]
    fill(spool, 1)
    drain(make_shipper(collector.url, spool), spool)
    envelope = json.loads(seen[0])
    assert (envelope["site"], envelope["position"], envelope["version"]) == ("north", "12", SCHEMA_VERSION)


def test_a_round_that_raises_unexpectedly_does_not_end_delivery(
    collector: FakeCollector, spool: SqliteSpool, caplog: pytest.LogCaptureFixture
) -> None:
    ids = fill(spool, 2)
    shipper = make_shipper(collector.url, spool)
    real_pending = spool.pending
    failures = iter([RuntimeError("a bug"), RuntimeError("a bug")])

    def flaky(limit: int) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_pending(limit)

    spool.pending = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.shipper"):
        drain(shipper, spool)
    assert collector.stored == ids
    crashes = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(crashes) == 1  # the same failure again is not logged again
    assert crashes[0].exc_info is not None
