"""Heartbeats: what receiving them costs the collector, and what sending them costs an agent.

A real collector (``lifeline-collector serve``, pinned to CPU 0) with N registered agents; a
separate load process (pinned to CPU 1) sends every agent's beats at the default rate (one
datagram per agent every 250 ms, the tunnel path) over loopback UDP, with each agent's real key,
counter and send time. Measured over a window: the collector's CPU (utime + stime of its process
tree, % of one core, less what it spends idle), beats sent by the load process and beats the
collector accepted (``lifeline_collector_heartbeats_total{result="ok"}``), hence beats dropped,
and the response time of small ingest requests (20 a second) without and with the beats.
Fleet sizes rise until one core no longer keeps up (> 1 % dropped).

Then the receiver's two shapes side by side, in-process: a thread with a blocking socket (what the
collector runs) and an asyncio datagram endpoint on the event loop, each fed a fixed rate, with the
event loop's lag (a 5 ms timer's overshoot) as a stand-in for ingest latency.

Last, the agent side: the real ``Sender`` beating over two paths (tunnel every 250 ms, a fallback
every second) for a while, its process CPU as % of one core.

    .venv/bin/python bench/heartbeat.py            # 1,000 .. 20,000 agents, 10 s windows
    .venv/bin/python bench/heartbeat.py --quick    # small fleets, short windows (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Meter, http_get, machine, register_agents, running, start_collector, table

INTERVAL = 0.25
OK_RE = re.compile(rb'^lifeline_collector_heartbeats_total\{result="ok"\} ([0-9.e+]+)$', re.MULTILINE)


def accepted(url: str) -> int:
    status, body = http_get(f"{url}/metrics", timeout=10.0)
    found = OK_RE.search(body) if status == 200 else None
    if found is None:
        raise SystemExit(f"no heartbeat counter on {url}/metrics (HTTP {status})")
    return int(float(found.group(1)))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# --- the load process -----------------------------------------------------------------------------


def generate(spec_path: str) -> None:
    """Send every agent's beats at INTERVAL for the window; print how many were sent (JSON)."""
    from lifeline_wire import BeatDigest, Heartbeat
    from lifeline_wire.heartbeat import encode

    spec = json.loads(Path(spec_path).read_text())
    keys = {agent: bytes.fromhex(key) for agent, key in spec["keys"].items()}
    address = (spec["host"], spec["port"])
    seconds = float(spec["seconds"])
    rounds = max(1, round(seconds / INTERVAL))
    digest = BeatDigest("none", "ok", 0.02, None, True, False)
    start = time.time() + 2.0 + len(keys) * rounds * 20e-6  # after the datagrams are made
    # Made ahead (each with its own counter and send time), so sending is all this process does.
    plan = [
        [
            encode(
                Heartbeat(agent, "bench", n + 1, _ms(start + n * INTERVAL), "tunnel", INTERVAL, digest),
                key,
            )
            for agent, key in keys.items()
        ]
        for n in range(rounds)
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    send = sock.sendto
    print(json.dumps({"ready": start}), flush=True)
    sent = late = 0
    for n, datagrams in enumerate(plan):
        due = start + n * INTERVAL
        # Spread each round over the interval, as many agents' independent timers would be.
        step = INTERVAL / len(datagrams)
        for index, datagram in enumerate(datagrams):
            at = due + index * step
            wait = at - time.time()
            if wait > 0.002:
                time.sleep(wait)
            elif wait < -INTERVAL:
                late += 1
            try:
                send(datagram, address)
                sent += 1
            except BlockingIOError:  # pragma: no cover - a blocking socket
                pass
    sock.close()
    print(json.dumps({"sent": sent, "late": late}), flush=True)


class IngestProbe:
    """Posts a small batch (one series, one point) 20 times a second over a kept-alive connection
    and keeps each answer's latency: the ingest path's response time while beats do or do not
    arrive."""

    def __init__(self, url: str, agent: str, token: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.agent, self.token = agent, token
        self.seq = 0
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        from lifeline_wire import Batch, Envelope, SeriesPoints, encode

        now = int(time.time() * 1000)
        self.seq += 1
        series = [SeriesPoints("lifeline_agent_spool_batches", {}, [(now, 0.0)])]
        batch = Batch(self.agent, "latency", self.seq, now, series=series)
        return encode(Envelope(2, [batch], now))

    def _run(self) -> None:
        import http.client

        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        next_at = time.monotonic()
        while not self._stop.is_set():
            body = self._body()
            started = time.monotonic()
            conn.request("POST", "/api/v1/ingest", body, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status == 200:
                self.latencies.append(time.monotonic() - started)
            next_at += 0.05
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def start(self) -> None:
        self.latencies = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, float]:
        """(p50, p99) of the answers since ``start``, in ms."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        done = sorted(self.latencies) or [math.nan]
        return done[len(done) // 2] * 1000, done[min(len(done) - 1, int(len(done) * 0.99))] * 1000


def fleet_round(workdir: Path, agents: int, seconds: float) -> dict[str, float]:
    from lifeline_collector.heartbeat import agent_key, load_master_secret
    from lifeline_collector.store import hash_token

    db = workdir / f"fleet-{agents}.db"
    tokens = register_agents(db, [f"hb-{i:05d}" for i in range(agents)])
    prober, prober_token = register_agents(db, ["ingest-probe"]).popitem()
    proc, url = start_collector(workdir, db, cpus={0})
    probe = IngestProbe(url, prober, prober_token)
    with running([proc]):
        master = load_master_secret(str(db) + ".heartbeat-secret")
        keys = {agent: agent_key(master, agent, hash_token(token)).hex() for agent, token in tokens.items()}
        port = int(url.rsplit(":", 1)[1])
        spec = workdir / f"spec-{agents}.json"
        spec.write_text(json.dumps({"keys": keys, "host": "127.0.0.1", "port": port, "seconds": seconds}))
        probe.start()  # warm the connection and the ingest path up; not counted
        time.sleep(1.0)
        probe.stop()
        meter = Meter(proc.pid)
        meter.start()
        probe.start()
        time.sleep(min(seconds, 5.0))
        quiet = probe.stop()
        idle = meter.stop().cpu_percent
        load = subprocess.Popen(
            [sys.executable, __file__, "--generate", str(spec)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)}),
        )
        try:
            assert load.stdout is not None
            ready = json.loads(load.stdout.readline())["ready"]
            time.sleep(max(0.0, ready - time.time()))
            meter.start()
            probe.start()
            result = json.loads(load.stdout.readline())
            busy = probe.stop()
            usage = meter.stop()
            load.wait(30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        time.sleep(0.5)  # the last beats out of the socket buffer
        got = accepted(url)  # a fresh collector: every beat it took came from this round
        _status, body = http_get(f"{url}/metrics", timeout=10.0)
        counters = re.findall(rb"^lifeline_collector_heartbeats_total.*$", body, re.MULTILINE)
        print("   ", b" ".join(counters).decode(), file=sys.stderr)
    sent = result["sent"]
    return {
        "agents": agents,
        "sent_per_s": sent / seconds,
        "cpu": usage.cpu_percent,
        "idle": idle,
        "dropped": max(0.0, 100.0 * (sent - got) / sent) if sent else 0.0,
        "late": result["late"],
        "quiet_p50": quiet[0],
        "quiet_p99": quiet[1],
        "busy_p50": busy[0],
        "busy_p99": busy[1],
    }


# --- receiver shapes, in-process ------------------------------------------------------------------


def shape_round(mode: str, rate: int, seconds: float) -> dict[str, float]:
    """Feed ``rate`` beats/s into one receiver shape; its CPU and the event loop's timer lag."""
    from lifeline_collector.clock import SystemClock
    from lifeline_collector.fleet import AgentView, Fleet
    from lifeline_collector.heartbeat import BeatReceiver, HeartbeatServer
    from lifeline_wire import BeatDigest, Heartbeat
    from lifeline_wire.heartbeat import encode

    agents = max(1, round(rate * INTERVAL))
    fleet = Fleet()
    keys = {}
    for i in range(agents):
        agent = f"s-{i:05d}"
        fleet.agents[agent] = AgentView(agent)
        keys[agent] = bytes([i % 256]) * 32
    receiver = BeatReceiver(fleet, SystemClock(), None, source_rejects=10**9)
    receiver.set_keys(keys)
    digest = BeatDigest("none", "ok", 0.0, None, None, False)
    rounds = max(1, round(seconds / INTERVAL))
    start = time.time() + 1.0
    plan = [
        encode(Heartbeat(agent, "b", n + 1, _ms(start + n * INTERVAL), "tunnel", INTERVAL, digest), key)
        for n in range(rounds)
        for agent, key in keys.items()
    ]

    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        server: HeartbeatServer | None = None
        transport: asyncio.DatagramTransport | None = None
        if mode == "thread":
            server = HeartbeatServer(receiver, "127.0.0.1", 0)
            server.start()
            address = server.address
        else:

            class Endpoint(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    receiver.handle(data, addr[0])

            transport, _protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=("127.0.0.1", 0))
            address = transport.get_extra_info("sockname")[:2]
        lags: list[float] = []
        sender = threading.Thread(target=_send_plan, args=(plan, address, start, rate), daemon=True)
        sender.start()
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu0 = os.times()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)
        cpu1 = os.times()
        sender.join()
        if server is not None:
            server.stop()
        if transport is not None:
            transport.close()
        # The sender thread's own CPU is taken out below (it is measured separately).
        return (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), lags

    cpu, lags = asyncio.run(main())
    lags.sort()
    ok = receiver.counts["ok"]
    return {
        "cpu_total": 100.0 * cpu / seconds,
        "p50": lags[len(lags) // 2] * 1000,
        "p99": lags[int(len(lags) * 0.99)] * 1000,
        "received": 100.0 * ok / len(plan),
    }


def _send_plan(plan: list[bytes], address: tuple[str, int], start: float, rate: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    step = 1.0 / rate
    for index, datagram in enumerate(plan):
        wait = start + index * step - time.time()
        if wait > 0.002:
            time.sleep(wait)
        sock.sendto(datagram, address)
    sock.close()


def send_cost(rate: int, seconds: float) -> float:
    """CPU % of one core that only sending ``rate`` beats/s costs (subtracted from the shapes)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    plan = [b"x" * 100] * int(rate * seconds)
    start = time.time() + 0.2
    cpu0 = os.times()
    _send_plan(plan, sink.getsockname()[:2], start, rate)
    cpu1 = os.times()
    sink.close()
    return 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / seconds


# --- the agent side -------------------------------------------------------------------------------


def agent_sender(seconds: float) -> None:
    """Run the real Sender (two paths) for ``seconds``; print its CPU % of one core (JSON)."""
    from lifeline_agent.clock import SystemClock
    from lifeline_agent.config import HeartbeatSection
    from lifeline_agent.delivery.transport import Response
    from lifeline_agent.heartbeat import Sender
    from lifeline_wire import BeatDigest

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]

    class Offers:
        async def post(self, url: str, body: bytes, headers: object, interface: str = "") -> Response:
            answer = {"key": "A" * 43 + "=", "port": port, "interval": INTERVAL}
            return Response(200, {}, json.dumps(answer).encode())

        async def get(self, url: str, interface: str = "") -> Response:
            return Response(200, {}, b"")

        async def aclose(self) -> None:
            return None

    digest = BeatDigest("none", "ok", 0.02, None, True, False)
    sender = Sender(
        HeartbeatSection(),
        "pos-12",
        "boot",
        "token",
        [("http://127.0.0.1:1", False, True), ("http://127.0.0.1:2", True, True)],
        Offers(),
        SystemClock(),
        lambda: digest,
    )

    async def main() -> tuple[float, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        await asyncio.sleep(1.0)  # the offers, the first beats
        cpu0, sent0 = _cpu(), sender.sent
        await asyncio.sleep(seconds)
        cpu, sent = _cpu() - cpu0, sender.sent - sent0
        stop.set()
        await task
        return cpu, sent

    cpu, sent = asyncio.run(main())
    sink.close()
    timer = _bare_timer(min(seconds, 20.0))
    print(
        json.dumps({"cpu": 100.0 * cpu / seconds, "sent": sent, "errors": sender.send_errors, "timer": timer})
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bare_timer(seconds: float) -> float:
    """CPU % of a thread that only wakes every 250 ms: what this machine charges for the wake-ups."""
    halt = threading.Event()

    def tick() -> None:
        while not halt.wait(INTERVAL):
            pass

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    cpu0 = _cpu()
    time.sleep(seconds)
    cpu = _cpu() - cpu0
    halt.set()
    thread.join()
    return 100.0 * cpu / seconds


def agent_round(seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--agent-sender", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=2 * seconds + 60,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small fleets and short windows (smoke test)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--agent-sender", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="", help="comma-separated agent counts (default: rising)")
    args = parser.parse_args(argv)
    if args.generate:
        generate(args.generate)
        return 0
    if args.agent_sender:
        agent_sender(args.agent_sender)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s] or (
        [200, 1000] if args.quick else [1000, 2500, 5000, 10_000, 15_000, 20_000]
    )
    seconds = 3.0 if args.quick else 10.0
    print(f"machine: {machine()}\n")
    rows = []
    sustained = 0
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-hb-") as tmp:
        for agents in sizes:
            r = fleet_round(Path(tmp), agents, seconds)
            busy = max(0.0, r["cpu"] - r["idle"])
            rows.append(
                (
                    f"{agents:,}",
                    f"{r['sent_per_s']:,.0f}",
                    f"{r['cpu']:.1f}",
                    f"{busy / agents * 1000:.2f}",
                    f"{r['dropped']:.2f}",
                    f"{r['quiet_p50']:.1f} / {r['quiet_p99']:.1f}",
                    f"{r['busy_p50']:.1f} / {r['busy_p99']:.1f}",
                )
            )
            print(f"  {agents:,} agents: {r}", file=sys.stderr, flush=True)
            if r["dropped"] < 1.0:
                sustained = agents
            else:
                break
    print(
        table(
            f"Collector receiving heartbeats (a beat per agent every {INTERVAL * 1000:.0f} ms, "
            f"{seconds:.0f} s window, collector pinned to one core)",
            [
                "agents",
                "beats/s sent",
                "collector CPU %",
                "CPU % per 1,000 agents",
                "dropped %",
                "ingest p50 / p99 ms, no beats",
                "… with beats",
            ],
            rows,
        )
    )
    print(f"largest fleet measured with < 1 % of beats dropped on one core: {sustained:,} agents\n")
    rate = 2000 if args.quick else 20_000
    window = 2.0 if args.quick else 6.0
    baseline = send_cost(rate, window)
    shapes = []
    for mode in ("thread", "asyncio"):
        s = shape_round(mode, rate, window)
        shapes.append(
            (
                mode,
                f"{rate:,}",
                f"{max(0.0, s['cpu_total'] - baseline):.1f}",
                f"{s['received']:.1f}",
                f"{s['p50']:.2f}",
                f"{s['p99']:.2f}",
            )
        )
    print(
        table(
            "Receiver shapes in one process (load from a thread of the same process, its cost taken out)",
            ["receiver", "beats/s", "receiver CPU %", "received %", "loop lag p50 ms", "loop lag p99 ms"],
            shapes,
        )
    )
    agent_seconds = 5.0 if args.quick else 60.0
    a = agent_round(agent_seconds)
    print(
        table(
            "Agent side: the real Sender, tunnel every 250 ms + one fallback path every 1 s",
            ["window s", "datagrams sent", "send errors", "agent CPU % of one core", "bare 4 Hz timer CPU %"],
            [
                (
                    f"{agent_seconds:.0f}",
                    f"{a['sent']:.0f}",
                    f"{a['errors']:.0f}",
                    f"{a['cpu']:.3f}",
                    f"{a['timer']:.3f}",
                )
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
