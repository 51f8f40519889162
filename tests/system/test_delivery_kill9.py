"""kill -9 of the agent, again and again, at random points during sends: no sample lost, none twice.

A real collector (``lifeline-collector serve``) sits behind a small HTTP proxy owned by the test.
The proxy records every envelope the agent sends (which batch, how many samples), waits a random
0–150 ms, forwards it, and holds the collector's answer back for a random 0–300 ms, so kills land
before the collector has the request, after it committed but before the agent knows, and while
the agent deletes what was acknowledged. The agent (``lifeline-agent run``, batch every 0.5 s, a TCP probe
every 100 ms) is killed with SIGKILL at least 20 times and restarted each time; its spool file is
read after every kill. At the end a real Shipper drains what is left.

Then, for every boot: the collector holds batches 0..k with no gap, k being the highest seq the
agent ever committed (seen in a spool snapshot, through the proxy or at the collector), each
batch once (the store's UNIQUE (agent, boot, seq)), with exactly the number of samples the agent
put in it, and no probe sample twice.
"""

from __future__ import annotations

import asyncio
import random
import select
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from delivery_procs import (
    AGENT_ID,
    agent_config,
    agent_proc,
    cad_probe,
    loopback_collector,
    spool_batches,
    wait_for,
)

from lifeline_agent.config import AgentSection, CollectorEndpoint, CollectorSection
from lifeline_agent.delivery.shipper import Backoff, Shipper
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_wire import decode_envelope

pytestmark = [pytest.mark.system, pytest.mark.slow]

KILLS = 24
BatchId = tuple[str, int]


def _peer_gone(sock: socket.socket) -> bool:
    """True when the client closed its end (a killed process's sockets are closed by the kernel)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class HoldingProxy:
    """Forwards POSTs to the collector after 0–150 ms, records what passed, holds each answer
    0–300 ms more: kills land both before the collector has a batch and after."""

    def __init__(self, upstream: str, rng: random.Random) -> None:
        self.upstream = upstream
        self.rng = rng
        self.samples: dict[BatchId, int] = {}  # what the agent put in each batch it sent
        self.arrivals = 0
        self.dropped = 0  # requests whose sender died before they were forwarded
        self.lock = threading.Lock()
        proxy = self
        client = httpx.Client(timeout=10)
        self._client = client

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                envelope = decode_envelope(body)
                with proxy.lock:
                    proxy.arrivals += 1
                    for batch in envelope.batches:
                        proxy.samples[(batch.boot_id, batch.seq)] = batch.sample_count()
                    before, hold = proxy.rng.uniform(0.0, 0.15), proxy.rng.uniform(0.0, 0.3)
                time.sleep(before)  # a kill now: the collector has not seen the request
                if _peer_gone(self.connection):
                    with proxy.lock:
                        proxy.dropped += 1
                    return  # the agent died before its request left the "network": it never arrives
                answer = client.post(
                    proxy.upstream + self.path,
                    content=body,
                    headers={
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "content-type")
                    },
                )
                time.sleep(hold)  # a kill now: the collector has it, the agent does not know yet
                try:
                    self.send_response(answer.status_code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                except OSError:
                    pass  # the agent was killed while we held its answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()


def test_repeated_kill_9_during_sends_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, cad_listener: int
) -> None:
    rng = random.Random(20240505)
    collector, url, token = loopback_collector(tmp_path / "collector")
    collector.start(url)
    proxy = HoldingProxy(url, rng)
    workdir = tmp_path / "agent"
    config = agent_config(
        workdir,
        token,
        [proxy.url],
        [cad_probe(cad_listener, interval="100ms", timeout="50ms")],
        batch_interval="0.5s",
    )
    spool_path = workdir / "spool.db"
    committed: dict[BatchId, int] = {}  # every batch ever seen in the spool file, with its sample count
    kills_mid_send = 0
    try:
        for round_ in range(KILLS):
            agent = agent_proc(config, name=f"agent-{round_}").start()
            before = proxy.arrivals
            if round_ % 2 == 0:  # a kill during a send: after the n-th request arrived, at a random point
                sends = before + rng.randint(1, 4)
                wait_for("sends", lambda sends=sends: proxy.arrivals >= sends, timeout=30)  # type: ignore[misc]
                time.sleep(rng.uniform(0.0, 0.35))
                kills_mid_send += 1
            else:  # a kill at any point: appending, sending, acknowledging, idle
                time.sleep(rng.uniform(0.5, 3.0))
            assert agent.running(), agent.text()
            agent.kill()
            for boot, seq, samples, _priority in spool_batches(spool_path):
                committed[(boot, seq)] = samples

        # What the last kill left behind goes out with a real shipper, through the same proxy.
        spool = SqliteSpool(str(spool_path))
        shipper = Shipper(
            AgentSection(id=AGENT_ID, site="north", position="12"),
            CollectorSection(endpoints=(CollectorEndpoint(proxy.url),), timeout=10.0),
            spool,
            token,
            backoff=Backoff(0.05, 0.5),
            route_file="/nonexistent",
        )

        async def drain() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(shipper.run(stop))
            while spool.depth():
                await asyncio.sleep(0.05)
            stop.set()
            await task
            await shipper.aclose()

        asyncio.run(drain())
        spool.close()
    finally:
        proxy.close()
        collector.stop()

    stored = collector.seqs()
    counts = collector.sample_counts()
    known = {**proxy.samples, **committed}
    boots = {boot for boot, _seq in known}
    # Every start killed during a send had committed a batch (a start killed early may not have).
    assert kills_mid_send == KILLS // 2
    assert len(boots) >= kills_mid_send
    for boot in boots:
        highest = max(seq for b, seq in known if b == boot)
        assert stored.get(boot) == list(range(highest + 1)), (
            f"boot {boot}: a committed batch is missing ({proxy.dropped} requests died with their sender)"
        )
    # Every stored batch holds exactly the samples the agent put in it: none lost, none twice.
    assert counts.keys() == {(b, s) for b, seqs in stored.items() for s in seqs}
    for batch_id, count in counts.items():
        assert count == known[batch_id], batch_id
    probes_at = Counter(
        (labels, ts) for labels, ts, _value, _received in collector.samples("lifeline_probe_success")
    )
    assert [key for key, times in probes_at.items() if times > 1] == []
    # The collector's own sequence accounting agrees: every boot complete from seq 0.
    assert collector.query(
        "SELECT COUNT(*) FROM boots WHERE min_seq != 0 OR max_seq - min_seq + 1 != received"
    ) == [(0,)]
    # The test measured something real: on average at least one probe result per start (a start
    # lives 0.5-3 s with a probe every 100 ms; a slow machine spends part of that starting up).
    probes = collector.samples("lifeline_probe_success")
    assert len(probes) >= KILLS
