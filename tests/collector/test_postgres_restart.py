"""PostgreSQL stopped and started again under two real collectors: while it is gone ingest answers
503 with ``Retry-After`` and an agent keeps what was not acknowledged; afterwards every
acknowledged batch is stored exactly once, alerting is led again, and a position paged before the
restart is not paged again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from collector_kit import Receiver
from collectors_kit import add_agent, collectors, report

from lifeline_lab.postgres import Server, postgres_bin, running_postgres

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postgres_bin() is None, reason="postgresql is not installed"),
]


@pytest.fixture
def own_postgres() -> Iterator[Server]:
    """A server of this test's own: it is stopped and started, which the shared one must not be."""
    with running_postgres() as server:
        yield server


def _paged(receiver: Receiver, agent: str) -> int:
    return sum(
        1
        for body in receiver.bodies()
        for alert in body["alerts"]
        if alert["labels"].get("agent") == agent and alert["status"] == "firing"
    )


def test_a_postgresql_restart_loses_no_acknowledged_batch_and_pages_nobody_twice(
    tmp_path: Path, own_postgres: Server, receiver: Receiver
) -> None:
    with (
        own_postgres.fresh_database() as dsn,
        collectors(tmp_path, dsn, 2, hook=receiver.url, silent_after="4s") as group,
    ):
        token = add_agent(group[0].config, "pos-5", site="west")
        dark = add_agent(group[0].config, "pos-6")
        assert report(group[1].base, dark, "pos-6", 0).status_code == 200  # then it goes dark
        group[0].wait(lambda: _paged(receiver, "pos-6") == 1, "no page for the dark position")

        # An agent's spool: each batch stays until a collector acknowledged it.
        spool = list(range(1000))
        acknowledged: list[int] = []
        acknowledged_at: list[float] = []
        refusals: list[httpx.Response] = []
        stopped_at = restarted_at = None

        def deliver(seq: int, base: str) -> bool:
            try:
                answer = report(base, token, "pos-5", seq)
            except httpx.TransportError:
                return False
            if answer.status_code != 200:
                refusals.append(answer)
                return False
            assert answer.json()["results"][0]["status"] in ("accepted", "duplicate")
            acknowledged.append(seq)
            acknowledged_at.append(time.monotonic())
            return True

        started = time.monotonic()
        turn = 0
        while spool:
            elapsed = time.monotonic() - started
            if stopped_at is None and elapsed > 2.0:
                own_postgres.stop()
                stopped_at = time.monotonic()
            if stopped_at is not None and restarted_at is None and time.monotonic() - stopped_at > 3.0:
                own_postgres.start()
                restarted_at = time.monotonic()
            if restarted_at is not None and time.monotonic() - restarted_at > 6.0:
                break  # the rest would only prolong the test
            turn += 1
            if deliver(spool[0], group[turn % 2].base):
                spool.pop(0)
            else:
                time.sleep(0.1)
            time.sleep(0.05)
        assert restarted_at is not None, "the test ended before PostgreSQL was restarted"
        assert refusals, "no request was refused while PostgreSQL was gone"
        assert {answer.status_code for answer in refusals} == {503}
        assert all(answer.headers.get("Retry-After") for answer in refusals)
        # Batches were acknowledged again after the restart; each acknowledged one is stored once.
        assert acknowledged_at[-1] > restarted_at
        with psycopg.connect(dsn) as conn:
            stored = [row[0] for row in conn.execute("SELECT seq FROM batches WHERE agent = 'pos-5'")]
        assert sorted(stored) == sorted(set(acknowledged))
        assert len(stored) == len(set(stored))

        # Alerting is led again, and the dark position, paged before the restart, is not paged again.
        mark = "evaluating alerts and notifying"
        group[0].wait(lambda: sum(m.text().count(mark) for m in group) >= 2, "nobody leads after the restart")
        time.sleep(3.0)
        assert _paged(receiver, "pos-6") == 1
        assert _paged(receiver, "pos-5") == 0
