"""The SQLite store: hashed tokens, one transaction per request, the remote-write cursor, pruning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_kit import T0, cad_round

from lifeline_collector.errors import DuplicateAgentError, UnknownAgentError
from lifeline_collector.store import Store, hash_token, labels_key
from lifeline_wire import Batch

MS = int(T0 * 1000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(str(tmp_path / "sub" / "lifeline.db"))
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


def test_failed_request_writes_nothing(store: Store) -> None:
    store.add_agent("pos-1", now_ms=MS)
    batch = Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS, samples=cad_round(MS, True, 0))

    def crash_mid_request() -> None:
        with store.writer() as writer:
            batch_id = writer.insert_batch("pos-1", batch, MS)
            assert batch_id is not None
            series = writer.series_id("pos-1", "lifeline_probe_success", labels_key(batch.samples[0].labels))
            writer.insert_samples([(series, MS, 1.0, batch_id)])
            raise RuntimeError("crash in the middle of a request")

    with pytest.raises(RuntimeError):
        crash_mid_request()
    assert store.count("batches") == 0
    assert store.count("samples") == 0
    assert store.count("series") == 0
    # ... and the retry after the failure is stored normally (no stale cached series id).
    with store.writer() as writer:
        batch_id = writer.insert_batch("pos-1", batch, MS)
        assert batch_id is not None
        series = writer.series_id("pos-1", "lifeline_probe_success", labels_key(batch.samples[0].labels))
        writer.insert_samples([(series, MS, 1.0, batch_id)])
    assert store.count("samples") == 1


def test_samples_after_is_a_cursor_with_prometheus_labels(store: Store) -> None:
    store.add_agent("pos-1", site="north", now_ms=MS)
    with store.writer() as writer:
        batch = Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS)
        batch_id = writer.insert_batch("pos-1", batch, MS)
        assert batch_id is not None
        series = writer.series_id(
            "pos-1", "lifeline_probe_success", labels_key({"target": "cad", "role": "cad"})
        )
        writer.insert_samples([(series, MS + i, float(i % 2), batch_id) for i in range(5)])
    first = store.samples_after(0, 3)
    assert [row[3] for row in first] == [MS, MS + 1, MS + 2]
    assert first[0][1] == (
        ("__name__", "lifeline_probe_success"),
        ("agent", "pos-1"),
        ("role", "cad"),
        ("site", "north"),
        ("target", "cad"),
    )
    rest = store.samples_after(first[-1][0], 100)
    assert [row[3] for row in rest] == [MS + 3, MS + 4]
    assert store.samples_after(rest[-1][0], 100) == []


def test_prune_drops_old_rows_only(store: Store) -> None:
    store.add_agent("pos-1", now_ms=MS)
    with store.writer() as writer:
        old = writer.insert_batch("pos-1", Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS), MS)
        new = writer.insert_batch(
            "pos-1", Batch(agent_id="pos-1", boot_id="b", seq=1, created_ms=MS), MS + 10_000
        )
        assert old is not None
        assert new is not None
        series = writer.series_id("pos-1", "lifeline_power_on_ac", "{}")
        writer.insert_samples([(series, MS, 1.0, old), (series, MS + 10_000, 1.0, new)])
    assert store.prune(MS + 5_000) == 1
    assert store.count("samples") == 1
    assert store.count("batches") == 1
