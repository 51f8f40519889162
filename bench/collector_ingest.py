"""Collector ingest at rising fleet sizes, with Pushgateway and VictoriaMetrics taking the same samples.

Each simulated agent sends one batch every ``--interval`` seconds (5 s, the agent's default). The
batch is built by the agent's own code (``AgentService``'s runner, recorder, batcher and self
metrics) for one home position — 5 ICMP targets (one with a 5-echo burst) and a TCP CAD target,
probed every second — so it carries the catalog series a real agent sends: 339 samples per 5 s
batch; one batch in ten also carries the two ``probe.state_change`` events of a short internet
outage. The batch is in the wire's series form (version 2, what the agent cuts by default);
``--sample-form`` makes the agent cut version 1 batches (one object per sample) instead, for a
before/after comparison in the same run. Requests go over real HTTP/1.1 keep-alive connections
from an asyncio load generator (this process) that is open-loop: latency counts from the moment a
batch was due, so a slow server is not hidden by a generator that waits for it.

Reference rows, same fleet and rate: Prometheus Pushgateway gets each batch as a text-format PUT of
the agent's group (``/metrics/job/lifeline/agent/<id>``; it keeps one value per series and refuses
timestamps, so a push carries the 68 latest values), and VictoriaMetrics gets every sample with its
timestamp on ``/api/v1/import/prometheus``.

On a machine with 2 or more CPUs the server under test is pinned to CPU 1 and the generator to
CPU 0, so neither starves the other; the generator's own CPU is reported separately.

    .venv/bin/python bench/collector_ingest.py                   # 100, 1000, 5000, 10000 agents
    .venv/bin/python bench/collector_ingest.py --quick           # 20 and 100 agents, 2 s windows
    .venv/bin/python bench/collector_ingest.py --agents 10000 --targets lifeline --window 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Meter,
    Proc,
    free_port,
    machine,
    mb,
    need_binary,
    register_agents,
    start_collector,
    table,
    wait_http,
)

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
VICTORIA = "/usr/bin/victoria-metrics"
TEMPLATE_AGENT = "tmpl-agent"
TEMPLATE_BOOT = "tmplboot"
BASE_MS = 1_111_111_111_000  # the template's clock: every timestamp is a recognisable marker
ROUNDS = 5  # probe rounds per batch (1 s probes, 5 s batches)
EVENT_EVERY = 10  # one batch in ten carries events
AGENT_LABEL = 'agent="%(agent)s"'  # the label values of the template hold no other "%"
SERVER_CPUS = {1}
LOADGEN_CPUS = {0}


# --- what a real agent sends ----------------------------------------------------------------------


class _ManualClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def agent_batches(series_form: bool = True) -> tuple[object, object]:
    """Two batches (plain, with events) cut by the agent's own code after 5 one-second rounds."""
    from lifeline_agent.config import parse
    from lifeline_agent.delivery.batcher import Batcher
    from lifeline_agent.delivery.shipper import Shipper
    from lifeline_agent.delivery.spool import MemorySpool
    from lifeline_agent.delivery.transport import Response
    from lifeline_agent.probes import REGISTRY, ProbeResult
    from lifeline_agent.service import AgentService

    class NoTransport:
        """The template agent never sends: its shipper exists only for the self metrics."""

        async def post(
            self, url: str, body: bytes, headers: Mapping[str, str], interface: str = ""
        ) -> Response:
            raise RuntimeError("the template agent never sends")

        async def get(self, url: str, interface: str = "") -> Response:
            raise RuntimeError("the template agent never sends")

        async def aclose(self) -> None:
            return None

    targets = [
        {"name": "home-router", "role": "router", "kind": "icmp", "host": "192.168.1.1", "path": "primary"},
        {"name": "hotspot", "role": "router", "kind": "icmp", "host": "192.168.42.1", "path": "backup"},
        {
            "name": "internet",
            "role": "internet",
            "kind": "icmp",
            "host": "9.9.9.9",
            "count": 5,
            "timeout": "500ms",
        },
        {"name": "vpn-concentrator", "role": "vpn", "kind": "icmp", "host": "10.200.0.1", "path": "tunnel"},
        {"name": "vpn-via-hotspot", "role": "vpn", "kind": "icmp", "host": "203.0.113.10", "path": "backup"},
        {
            "name": "cad-server",
            "role": "cad",
            "kind": "tcp",
            "host": "10.20.0.5",
            "port": 443,
            "path": "tunnel",
        },
    ]
    config = parse(
        {
            "agent": {"id": TEMPLATE_AGENT, "site": "bench", "position": TEMPLATE_AGENT},
            "discovery": {"default_gateways": False},
            "targets": targets,
        },
        "(bench)",
    )

    async def build(outage: bool) -> object:
        clock = _ManualClock(BASE_MS / 1000)
        spool = MemorySpool(clock=clock)
        service = AgentService(config, clock=clock, spool=spool, token="")
        service.boot_id = TEMPLATE_BOOT
        service.shipper = service.self_metrics.shipper = Shipper(
            config.agent, config.collector, spool, "", NoTransport(), clock
        )
        rounds = {"n": 0}

        async def fake(target: object, ctx: object) -> ProbeResult:
            count = int(getattr(target, "count", 1))
            name = str(getattr(target, "name", ""))
            if outage and name == "internet" and rounds["n"] == 2:
                return ProbeResult(False, "timeout", sent=count, rtts=(None,) * count)
            base = {"router": 0.0021, "vpn": 0.0183, "internet": 0.0124, "cad": 0.0216}
            rtts = tuple(base.get(str(getattr(target, "role", "")), 0.01) + 0.0007 * i for i in range(count))
            return ProbeResult(
                True,
                rtt_min=min(rtts),
                rtt_avg=sum(rtts) / count,
                rtt_max=max(rtts),
                sent=count,
                received=count,
                rtts=rtts,
            )

        service.runner.registry = {
            kind: dataclasses.replace(spec, run=fake) for kind, spec in REGISTRY.items()
        }
        for index in range(ROUNDS):
            rounds["n"] = index
            clock.now = BASE_MS / 1000 + index
            await asyncio.gather(*(service.runner.run_once(t) for t in service.discovery.targets))
        clock.now = BASE_MS / 1000 + ROUNDS
        batcher = Batcher(
            TEMPLATE_AGENT,
            TEMPLATE_BOOT,
            service.recorder,
            spool,
            clock,
            service.self_metrics.record,
            series_form=series_form,
        )
        return batcher.cut()[0]

    return asyncio.run(build(False)), asyncio.run(build(True))


@dataclass(frozen=True)
class Templates:
    """Request bodies as %-format templates: agent, boot, seq and the timestamps vary per request."""

    lifeline: tuple[bytes, bytes]  # (plain, with events)
    pushgateway: bytes
    victoria: bytes
    samples: int  # per batch
    series: int  # distinct series per batch
    events: int  # in the batch with events
    body_bytes: int


def _markers(body: bytes) -> bytes:
    body = body.replace(b"%", b"%%")
    for k in range(ROUNDS + 1):
        body = body.replace(b"%d" % (BASE_MS + 1000 * k), b"%%(t%d)d" % k)
    return body


def _label_text(labels: dict[str, str], extra: str = "") -> str:
    parts = [f'{k}="{v}"' for k, v in sorted(labels.items())]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: object) -> str:
    return value if isinstance(value, str) else repr(float(value))  # type: ignore[arg-type]


def templates(series_form: bool = True) -> Templates:
    from lifeline_wire import SCHEMA_VERSION, Batch, Envelope, encode
    from lifeline_wire.catalog import CATALOG

    plain, eventful = agent_batches(series_form)
    assert isinstance(plain, Batch)
    assert isinstance(eventful, Batch)

    def envelope(batch: Batch) -> bytes:
        sent = Envelope(
            version=SCHEMA_VERSION if series_form else 1,
            batches=[batch],
            sent_ms=BASE_MS + 1000 * ROUNDS,
            site="bench",
            position="p",
        )
        body = _markers(encode(sent))
        body = body.replace(f'"{TEMPLATE_AGENT}"'.encode(), b'"%(agent)s"')
        body = body.replace(f'"{TEMPLATE_BOOT}"'.encode(), b'"%(boot)s"')
        return body.replace(b'"seq":0', b'"seq":%(seq)d')

    # Pushgateway: the newest value of each series, typed, without timestamps (it refuses them).
    latest: dict[tuple[str, str], str] = {}
    for sample in plain.every_sample():
        latest[(sample.name, _label_text(sample.labels))] = _number(sample.value)
    lines: list[str] = []
    for name in sorted({n for n, _ in latest}):
        kind = CATALOG[name].type
        lines.append(f"# TYPE {name} {'counter' if kind == 'counter' else 'gauge'}")
        lines += [f"{n}{labels} {value}" for (n, labels), value in sorted(latest.items()) if n == name]
    push = ("\n".join(lines) + "\n").encode().replace(b"%", b"%%")

    # VictoriaMetrics: every sample with its millisecond timestamp, the agent as a label.
    vm_lines = [
        f"{s.name}{_label_text(s.labels, AGENT_LABEL)} {_number(s.value)} {s.ts_ms}"
        for s in plain.every_sample()
    ]
    vm = ("\n".join(vm_lines) + "\n").encode()
    for k in range(ROUNDS + 1):
        vm = vm.replace(b" %d\n" % (BASE_MS + 1000 * k), b" %%(t%d)d\n" % k)
    plain_body = envelope(plain)
    return Templates(
        lifeline=(plain_body, envelope(eventful)),
        pushgateway=push,
        victoria=vm,
        samples=plain.sample_count(),
        series=len(latest),
        events=len(eventful.events),
        body_bytes=len(plain_body),
    )


# --- the servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: Proc
    port: int
    # (agent index, seq, now_ms) → (method, path, extra headers, body)
    request: Callable[[int, int, int], tuple[str, str, str, bytes]]
    ok: Callable[[int, bytes], bool]


def _times(now_ms: int) -> dict[bytes, bytes | int]:
    """The template's timestamps for a batch cut at ``now_ms`` (bytes keys: bytes %-formatting)."""
    return {b"t%d" % k: now_ms - 1000 * (ROUNDS - k) for k in range(ROUNDS + 1)}


def start_lifeline(workdir: Path, agents: int, tpl: Templates, cpus: set[int] | None) -> Server:
    db = workdir / "collector.db"
    ids = [f"a{i:05d}" for i in range(agents)]
    tokens = register_agents(db, ids)
    agent_ids = [i.encode() for i in ids]
    auth = [f"Authorization: Bearer {tokens[i]}\r\nContent-Type: application/json\r\n" for i in ids]
    proc, url = start_collector(workdir, db, cpus=cpus)
    port = int(url.rsplit(":", 1)[1])
    plain, eventful = tpl.lifeline

    def request(index: int, seq: int, now_ms: int) -> tuple[str, str, str, bytes]:
        template = eventful if (index + seq) % EVENT_EVERY == 0 else plain
        values = {b"agent": agent_ids[index], b"boot": b"boot%d" % index, b"seq": seq, **_times(now_ms)}
        return "POST", "/api/v1/ingest", auth[index], template % values

    def ok(status: int, body: bytes) -> bool:
        return status == 200 and b'"accepted"' in body

    return Server("lifeline-collector", proc, port, request, ok)


def start_pushgateway(workdir: Path, agents: int, tpl: Templates, cpus: set[int] | None) -> Server:
    port = free_port()
    proc = Proc(
        "pushgateway",
        [need_binary(PUSHGATEWAY), f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        workdir,
        cpus=cpus,
    )
    wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    body = tpl.pushgateway % {}
    header = "Content-Type: text/plain; version=0.0.4\r\n"

    def request(index: int, seq: int, now_ms: int) -> tuple[str, str, str, bytes]:
        return "PUT", f"/metrics/job/lifeline/agent/a{index:05d}", header, body

    return Server("pushgateway", proc, port, request, lambda status, _body: 200 <= status < 300)


def start_victoria(workdir: Path, agents: int, tpl: Templates, cpus: set[int] | None) -> Server:
    port = free_port()
    proc = Proc(
        "victoria-metrics",
        [
            need_binary(VICTORIA),
            f"-storageDataPath={workdir / 'vm-data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-loggerLevel=WARN",
        ],
        workdir,
        cpus=cpus,
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    header = "Content-Type: text/plain\r\n"

    def request(index: int, seq: int, now_ms: int) -> tuple[str, str, str, bytes]:
        return (
            "POST",
            "/api/v1/import/prometheus",
            header,
            tpl.victoria % {b"agent": b"a%05d" % index, **_times(now_ms)},
        )

    return Server("victoria-metrics", proc, port, request, lambda status, _body: 200 <= status < 300)


SERVERS = {"lifeline": start_lifeline, "pushgateway": start_pushgateway, "victoria": start_victoria}


# --- the load generator ---------------------------------------------------------------------------


class Connection:
    """One HTTP/1.1 keep-alive connection; reconnects once if the server closed an idle one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                await self._open()
            assert self.reader is not None
            assert self.writer is not None
            try:
                self.writer.write(head + body)
                await self.writer.drain()
                return await self._response(self.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if fresh or attempt:
                    raise
                self.reconnects += 1
        raise ConnectionError("unreachable")  # pragma: no cover

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if status in (204, 304):
            body = b""
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                body += chunk[:-2]
                if size == 0:
                    break
        else:
            body = await reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body


@dataclass
class Step:
    server: str
    agents: int
    offered: float
    achieved: float
    p50: float
    p99: float
    errors: int
    late: int
    server_cpu: float
    server_rss: int
    server_peak: int
    loadgen_cpu: float
    samples_per_batch: int

    @property
    def saturated(self) -> bool:
        return self.achieved < 0.95 * self.offered or self.p99 > 1.0 or self.errors > 0


def verdict(step: Step) -> str:
    if not step.saturated:
        return "no"
    # A generator using its whole core may be what fell behind: then the row says so.
    return "load generator bound" if step.loadgen_cpu >= 90 else "yes"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def drive(
    server: Server,
    agents: int,
    interval: float,
    warmup: float,
    window: float,
    conns: int,
    profile: Path | None = None,
) -> Step:
    loop = asyncio.get_running_loop()
    rate = agents / interval
    total = int(rate * (warmup + window))
    start = loop.time() + 0.2
    w0, w1 = start + warmup, start + warmup + window
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    done_ok: list[float] = []
    errors = 0
    first_error = ""
    connections = [Connection(server.port) for _ in range(conns)]

    async def worker(conn: Connection) -> None:
        nonlocal errors, first_error
        while True:
            item = await queue.get()
            if item is None:
                return
            j, due = item
            index, seq = j % agents, j // agents
            method, path, headers, body = server.request(index, seq, int(time.time() * 1000))
            ok = False
            try:
                status, answer = await conn.request(method, path, headers, body)
                ok = server.ok(status, answer)
                if not ok and not first_error:
                    first_error = f"HTTP {status}: {answer[:200]!r}"
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                if not first_error:
                    first_error = f"{type(exc).__name__}: {exc}"
            finished = loop.time()
            if w0 <= due < w1:
                latencies.append(finished - due)
                errors += 0 if ok else 1
            if ok:
                done_ok.append(finished)

    meter = Meter(server.proc.pid)
    cpu0 = 0.0
    profiler: list[subprocess.Popen[bytes]] = []

    async def measure() -> None:
        nonlocal cpu0
        await asyncio.sleep(max(0.0, w0 - loop.time()))
        meter.start()
        cpu0 = _self_cpu()
        if profile is not None:
            profiler.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(server.proc.pid),
                        "--duration",
                        str(max(1, int(window))),
                        "--format",
                        "raw",
                        "--output",
                        str(profile),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    workers = [asyncio.create_task(worker(c)) for c in connections]
    measuring = asyncio.create_task(measure())
    j = 0
    while j < total:
        broken = [t for t in workers if t.done()]
        if broken:  # a worker only ends early on a bug in this script: say so
            await broken[0]
            raise RuntimeError("a load-generator worker stopped")
        now = loop.time()
        due = start + j / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while j < total and start + j / rate <= now:
            queue.put_nowait((j, start + j / rate))
            j += 1
    await measuring
    await asyncio.sleep(max(0.0, w1 - loop.time()))
    usage = meter.stop()
    for spy in profiler:
        spy.wait()
    loadgen = 100.0 * (_self_cpu() - cpu0) / window
    for _ in workers:
        queue.put_nowait(None)
    _, pending = await asyncio.wait(workers, timeout=10.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for conn in connections:
        conn.close()
    scheduled = int(rate * window)
    late = scheduled - len(latencies)  # still unanswered 10 s after the last one was due
    all_latencies = latencies + [math.inf] * max(0, late)
    if first_error:
        print(f"  {server.name} @ {agents} agents: first failure: {first_error}", file=sys.stderr)
    return Step(
        server=server.name,
        agents=agents,
        offered=rate,
        achieved=sum(1 for t in done_ok if w0 <= t < w1) / window,
        p50=percentile(all_latencies, 0.50),
        p99=percentile(all_latencies, 0.99),
        errors=errors,
        late=max(0, late),
        server_cpu=usage.cpu_percent,
        server_rss=usage.rss,
        server_peak=usage.peak,
        loadgen_cpu=loadgen,
        samples_per_batch=0,
    )


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def run_step(name: str, agents: int, tpl: Templates, args: argparse.Namespace, cpus: set[int] | None) -> Step:
    with tempfile.TemporaryDirectory(prefix=f"lifeline-bench-{name}-") as tmp:
        server = SERVERS[name](Path(tmp), agents, tpl, cpus)
        try:
            conns = max(1, min(args.connections, agents))
            profile = None
            if args.profile and name == "lifeline":
                profile = Path(args.profile) / f"collector-{agents}.txt"
                profile.parent.mkdir(parents=True, exist_ok=True)
            step = asyncio.run(drive(server, agents, args.interval, args.warmup, args.window, conns, profile))
        finally:
            server.proc.stop()
    per_batch = {"lifeline": tpl.samples, "pushgateway": tpl.series, "victoria": tpl.samples}[name]
    return dataclasses.replace(step, samples_per_batch=per_batch)


def ms(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value * 1000:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="100,1000,5000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--servers", default="lifeline,pushgateway,victoria", help="which servers to load")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between an agent's batches")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds per step (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--all-steps", action="store_true", help="keep rising after a server saturates")
    parser.add_argument(
        "--profile",
        default="",
        help="directory for py-spy collapsed stacks of the collector (collector-N.txt)",
    )
    parser.add_argument("--quick", action="store_true", help="20 and 100 agents, 2 s windows (smoke test)")
    parser.add_argument(
        "--sample-form", action="store_true", help="the agent cuts version 1 batches (one object per sample)"
    )
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.agents.split(",") if x.strip()]
    if args.quick:
        sizes, args.window, args.warmup = [20, 100], 2.0, 1.0
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {sorted(SERVERS)}")
    cpus: set[int] | None = None
    if (os.cpu_count() or 1) >= 2:
        cpus = SERVER_CPUS
        os.sched_setaffinity(0, LOADGEN_CPUS)

    logging.getLogger("lifeline_agent").setLevel(logging.ERROR)  # the template's outage is staged
    tpl = templates(series_form=not args.sample_form)
    print(f"# Collector ingest — {machine()}")
    print(
        f"one batch per agent every {args.interval:g}s ({'sample' if args.sample_form else 'series'} form);"
        f" {tpl.samples} samples ({tpl.series} series) and "
        f"{tpl.body_bytes} bytes of JSON per batch, {tpl.events} events in 1 batch of {EVENT_EVERY}; "
        f"{args.connections} keep-alive connections; {args.warmup:g}s warm-up, {args.window:g}s measured; "
        f"server pinned to CPU {sorted(cpus) if cpus else 'any'}, load generator to "
        f"{sorted(LOADGEN_CPUS) if cpus else 'any'}\n"
    )
    rows = []
    saturation: dict[str, str] = {}
    for name in names:
        for agents in sizes:
            step = run_step(name, agents, tpl, args, cpus)
            rows.append(
                [
                    step.server,
                    step.agents,
                    f"{step.offered:.0f}",
                    f"{step.achieved:.0f}",
                    f"{step.achieved * step.samples_per_batch:.0f}",
                    ms(step.p50),
                    ms(step.p99),
                    step.errors,
                    f"{step.server_cpu:.0f}",
                    mb(step.server_rss),
                    mb(step.server_peak),
                    f"{step.loadgen_cpu:.0f}",
                    "yes" if step.p99 < 0.1 and not step.saturated else "no",
                    verdict(step),
                ]
            )
            print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr)
            if step.saturated:
                saturation.setdefault(name, f"{agents} agents ({step.offered:.0f} batches/s offered)")
                if not args.all_steps:
                    break
    print(
        table(
            "Ingest at rising fleet sizes",
            [
                "server",
                "agents",
                "offered batches/s",
                "achieved batches/s",
                "samples/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server CPU %",
                "server RSS MB",
                "server peak MB",
                "loadgen CPU %",
                "p99 < 100 ms",
                "saturated",
            ],
            rows,
        )
    )
    for name in names:
        print(f"{name}: saturates at {saturation.get(name, 'none of the sizes tried')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
