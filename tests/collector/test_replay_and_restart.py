"""A batch replayed later — another clock instant, after a restart, by either decode path — is
stored once; a collector restart pages nobody for ``silent_after`` (agents that report in
batches get that long to reach it again), then counts silence from its start."""

from __future__ import annotations

from pathlib import Path

import pytest
from collector_kit import T0, Receiver, cad_round, envelope, make_config, serving

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow
from lifeline_wire import decode_envelope

pytestmark = pytest.mark.anyio

MS = int(T0 * 1000)


def stored(service: Collector) -> tuple[int, int, int]:
    return (
        service.store.count("batches"),
        service.store.count("samples"),
        len(service.store.samples_after(0, 10_000)),
    )


async def test_a_replay_that_arrives_later_is_stored_once(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path)
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}
    first = envelope("pos-1", (0, cad_round(MS, False, 1)), (1, cad_round(MS + 1000, False, 2)))
    async with serving(app) as client:
        answer = (await client.post("/api/v1/ingest", content=first, headers=auth)).json()
        assert [r["status"] for r in answer["results"]] == ["accepted", "accepted"]
        once = stored(service)
        latest = dict(service.fleet.agents["pos-1"].series["lifeline_probe_consecutive_failures"])
        # The agent never heard the answer: it sends the same batches a minute later, then again
        # with a newer batch in front (its backlog order), and once through the strict path.
        clock.advance(60)
        later = (await client.post("/api/v1/ingest", content=first, headers=auth)).json()
        assert [r["status"] for r in later["results"]] == ["duplicate", "duplicate"]
        clock.advance(3600)
        mixed = envelope("pos-1", (2, cad_round(MS + 2000, True, 0)), (1, cad_round(MS + 1000, False, 2)))
        statuses = [
            r["status"]
            for r in (await client.post("/api/v1/ingest", content=mixed, headers=auth)).json()["results"]
        ]
        assert statuses == ["accepted", "duplicate"]
        batches, samples, numbered = stored(service)
    assert batches == once[0] + 1
    assert samples == numbered == once[1] + len(cad_round(MS, True, 0))
    # And after a restart, a day later, by the strict decoder.
    clock.advance(86_400)
    again = Collector(config, clock=clock)
    row = again.store.agent("pos-1")
    assert row is not None
    response = again.ingest(row, decode_envelope(first))
    assert [r.status for r in response.results] == ["duplicate", "duplicate"]
    assert stored(again)[0] == once[0] + 1
    assert again.fleet.agents["pos-1"].seq.missing == 0
    assert latest.keys() == again.fleet.agents["pos-1"].series["lifeline_probe_consecutive_failures"].keys()
    again.store.close()


async def test_a_collector_restart_pages_nobody_for_silent_after(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    config = make_config(
        tmp_path,
        alerting={"silent_after": "15s"},
        notifiers=[{"kind": "webhook", "name": "pager", "url": receiver.url}],
    )
    before = create_app(config, clock=clock, ticker=False)
    service: Collector = before.state.collector
    service.store.add_agent("pos-1", site="north", position="1", now_ms=MS)
    service.store.add_agent("pos-2", site="north", position="2", now_ms=MS)
    async with serving(before):
        for agent in ("pos-1", "pos-2"):
            row = service.store.agent(agent)
            assert row is not None
            service.ingest(row, decode_envelope(envelope(agent, (0, cad_round(MS, True, 0)))))
        service.tick()
    # The collector is down for ten minutes; its agents could not reach it meanwhile.
    clock.advance(600)
    after = create_app(config, clock=clock, ticker=False)
    service = after.state.collector
    async with serving(after):
        for _ in range(14):  # within silent_after of the start: nobody is paged
            clock.advance(1)
            service.tick()
            if clock.now() - (T0 + 600) > 10:  # pos-2 comes back in time; pos-1 does not
                row = service.store.agent("pos-2")
                assert isinstance(row, AgentRow)
                seq = int(clock.now() - T0)
                sent = envelope("pos-2", (seq, cad_round(int(clock.now() * 1000), True, 0)))
                service.ingest(row, decode_envelope(sent))
        assert await service.dispatcher.drain(10)
        assert receiver.bodies() == []
        assert not [a for a in service.engine.active() if a.state.value == "firing"]
        for _ in range(3):  # past silent_after since the start: the one still silent pages
            clock.advance(1)
            service.tick()
            row = service.store.agent("pos-2")
            assert row is not None
            seq = int(clock.now() - T0)
            service.ingest(
                row, decode_envelope(envelope("pos-2", (seq, cad_round(int(clock.now() * 1000), True, 0))))
            )
        assert await service.dispatcher.drain(10)
    pages = receiver.bodies()
    assert [(p["status"], p["alerts"][0]["labels"]["agent"]) for p in pages] == [("firing", "pos-1")]
    assert "silent" in pages[0]["alerts"][0]["annotations"]["summary"]
