"""Collectors side by side over PostgreSQL: ingest, leader failover, heartbeats, pages during kills.

Everything runs on this machine in one run: the collectors (real ``lifeline-collector serve``
processes), a real PostgreSQL (Debian's, started in a temporary directory, ``fsync`` on, as a
production server runs) and the load generators share its cores, so the figures are a floor of
what separate machines give; every table says what shared what.

1. **Ingest, closed loop.** N keep-alive connections each send the next batch as soon as the last
   one is answered (as ``wrk`` does), at N = 1, 2, 4, 8, 16 in flight, against 1 collector over
   SQLite, 1 over PostgreSQL and 2 over PostgreSQL (connections alternate between them). Batches
   are the agent's own (``collector_ingest.templates``), each with a new (agent, boot, seq) and
   fresh timestamps. CPU of the collectors, of PostgreSQL and of the generator is measured from
   ``/proc``; "batches per collector CPU-second" is the per-process figure sizing uses.
2. **Why the ingest figures disagree** (SQLite, collector pinned to CPU 1, generator to CPU 0, as
   ``bench/collector_ingest.py`` and an outside ``wrk`` run were): new batches of a fleet of 2,000
   and of 100 agents, the same body replayed unchanged (every answer after the first is
   "duplicate"), and the requests slower than 100 ms set beside the collector's garbage-collector
   pauses (each collector runs with a ``gc.callbacks`` hook that logs every pause of 5 ms or more;
   the product code is unchanged). The collector tunes its garbage collector once it is built
   (``lifeline_collector.runtime``); the rows marked "CPython's default gc" run it without that
   (the hook disables the tuning), to show what it buys.
3. **Failover.** Two collectors over PostgreSQL paging a webhook receiver; ``kill -9`` of the one
   that leads, ``--kills`` times, the killed one restarted each time. Measured: kill → the other
   logs ``evaluating alerts and notifying (epoch N)`` (from its log's timestamps), and kill → a
   page that fell due 0.3 s after the kill (a canary position whose only batch was stored
   ``silent_after`` − 0.3 s before it) reaches the receiver.
4. **Pages during the kills.** A position dark since before the first kill must have been paged
   exactly once after every kill; each canary exactly once. Duplicates and misses are counted.
5. **Heartbeats** with several collectors over PostgreSQL: ``bench/heartbeat.py``'s load process
   (every agent's real key and counter, a beat every 250 ms) aimed at each collector for its share
   of the fleet; beats accepted (each collector's ``/metrics``) per collector CPU-second.

    .venv/bin/python bench/collector_ha.py            # full: about 10 minutes
    .venv/bin/python bench/collector_ha.py --quick    # smoke-test size
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Meter,
    Proc,
    free_port,
    http_get,
    machine,
    register_agents,
    table,
    tool,
    wait_http,
)
from collector_ingest import EVENT_EVERY, Connection, Templates, percentile, templates
from collector_ingest import _times as batch_times

from lifeline_lab.postgres import Server as Postgres
from lifeline_lab.postgres import running_postgres

HERE = Path(__file__).resolve().parent
LEADS = re.compile(r"^(\S+ \S+) INFO \S+: evaluating alerts and notifying \(epoch (\d+)\)", re.MULTILINE)
STALL = 0.1  # a request slower than this is a stall (the p99 goal)
GC_LOGGED = 0.005  # pauses this long or longer are logged by the hook
# Runs the real CLI with a hook that logs the garbage collector's pauses (start, seconds, generation).
GC_HOOK = """
import gc, os, sys, time
out = open(os.environ["LIFELINE_BENCH_GC_LOG"], "a", buffering=1)
if os.environ.get("LIFELINE_BENCH_GC_DEFAULT"):
    import lifeline_collector.runtime
    lifeline_collector.runtime.tune_gc = lambda: None  # CPython's own thresholds, nothing frozen
began = [0.0]
def hook(phase, info):
    if phase == "start":
        began[0] = time.monotonic()
    else:
        took = time.monotonic() - began[0]
        if took >= FLOOR:
            out.write(f"{began[0]:.6f} {took:.6f} {info['generation']}\\n")
gc.callbacks.append(hook)
from lifeline_collector.cli import main
sys.argv[0] = "lifeline-collector"
main()
""".replace("FLOOR", repr(GC_LOGGED))


# --- collectors -----------------------------------------------------------------------------------


@dataclass
class Collector:
    name: str
    workdir: Path
    config: Path
    port: int
    log_level: str
    cpus: set[int] | None = None
    proc: Proc | None = None
    default_gc: bool = False  # run without lifeline_collector.runtime.tune_gc (the comparison)
    starts: int = 0
    gc_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.gc_log = self.workdir / f"{self.name}.gc"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.starts += 1  # a log file per start: Proc opens its log afresh
        argv = [sys.executable, "-c", GC_HOOK, "serve", "--config", str(self.config)]
        self.proc = Proc(
            f"{self.name}-{self.starts}",
            [*argv, "--log-level", self.log_level],
            self.workdir,
            cpus=self.cpus,
            env={
                "LIFELINE_BENCH_GC_LOG": str(self.gc_log),
                "LIFELINE_BENCH_GC_DEFAULT": "1" if self.default_gc else "",
            },
        )
        wait_http(f"{self.url}/healthz", self.proc, timeout=60)

    def kill(self) -> float:
        """``kill -9``; returns the wall-clock time it was sent."""
        assert self.proc is not None
        sent = time.time()
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(10)
        return sent

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log_text(self) -> str:
        return "".join(
            (self.workdir / f"{self.name}-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

    def terms(self) -> list[tuple[int, float]]:
        """(epoch, wall-clock time) of every "evaluating alerts and notifying" line in its log."""
        return [(int(m.group(2)), _log_time(m.group(1))) for m in LEADS.finditer(self.log_text())]

    def gc_pauses(self) -> list[tuple[float, float, int]]:
        with contextlib.suppress(OSError):
            return [
                (float(a), float(b), int(c))
                for a, b, c in (line.split() for line in self.gc_log.read_text().splitlines() if line)
            ]
        return []


def _log_time(stamp: str) -> float:
    """The logging module's ``asctime`` (local time, milliseconds) as a Unix time."""
    whole, _, millis = stamp.partition(",")
    return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def write_config(
    workdir: Path, name: str, port: int, store: str, *, hook: str = "", silent: str = "60s"
) -> Path:
    path = workdir / f"{name}.toml"
    text = (
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f"[store]\n{store}\n"
        f'[alerting]\nsilent_after = "{silent}"\nevaluate_interval = "200ms"\nresolve_hold = "1s"\n'
    )
    if hook:
        text += f'[[notifiers]]\nkind = "webhook"\nname = "pager"\nurl = "{hook}"\n'
    path.write_text(text)
    return path


def sqlite_store(workdir: Path) -> str:
    return f'path = "{workdir / "lifeline.db"}"'


def postgres_store(workdir: Path, dsn: str) -> str:
    # path: where the heartbeat secret lives; one file for all, as deployment.md has it copied.
    return f'backend = "postgresql"\ndsn = "{dsn}"\npath = "{workdir / "lifeline.db"}"'


@contextlib.contextmanager
def collectors(
    workdir: Path,
    count: int,
    store: str,
    *,
    hook: str = "",
    silent: str = "60s",
    log_level: str = "warning",
    cpus: set[int] | None = None,
    default_gc: bool = False,
) -> Iterator[list[Collector]]:
    group = []
    for index in range(count):
        port = free_port()
        name = f"collector-{index}"
        config = write_config(workdir, name, port, store, hook=hook, silent=silent)
        group.append(Collector(name, workdir, config, port, log_level, cpus, default_gc=default_gc))
    try:
        for member in group:  # one after the other: the first one started leads
            member.start()
        yield group
    finally:
        for member in group:
            member.stop()


# --- 1 and 2: ingest, closed loop -----------------------------------------------------------------


@dataclass
class Load:
    in_flight: int
    done: int
    per_s: float
    p50: float
    p99: float
    worst: float
    errors: int
    duplicates: int
    collectors_cpu: float  # % of one core, summed
    postgres_cpu: float
    loadgen_cpu: float
    stalls: list[tuple[float, float]]  # (start, seconds) of requests slower than STALL
    began: float  # the measured window, monotonic clock
    ended: float

    @property
    def per_cpu_s(self) -> float:
        return self.per_s / (self.collectors_cpu / 100) if self.collectors_cpu > 0 else math.nan


def agent_ids(count: int) -> list[str]:
    return [f"a{i:05d}" for i in range(count)]


class Agents:
    """The registered agents' request bodies: each request a new (agent, seq) unless ``replay``."""

    def __init__(self, tpl: Templates, tokens: dict[str, str]) -> None:
        self.ids = [agent.encode() for agent in tokens]
        self.auth = [
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            for token in tokens.values()
        ]
        self.plain, self.eventful = tpl.lifeline
        self.next = 0  # requests made so far across every step: seq keeps growing
        self.replayed: dict[int, bytes] = {}

    def request(self, replay: bool) -> tuple[str, bytes]:
        j = self.next
        self.next += 1
        index = j % len(self.ids)
        if replay:  # the same bytes for this agent every time, as a replaying tool sends
            if index not in self.replayed:
                self.replayed[index] = self._body(index, 0, int(time.time() * 1000))
            return self.auth[index], self.replayed[index]
        return self.auth[index], self._body(index, j // len(self.ids) + 1, int(time.time() * 1000))

    def _body(self, index: int, seq: int, now_ms: int) -> bytes:
        template = self.eventful if (index + seq) % EVENT_EVERY == 0 else self.plain
        values = {b"agent": self.ids[index], b"boot": b"ha", b"seq": seq, **batch_times(now_ms)}
        return template % values


async def closed_loop(
    ports: Sequence[int],
    agents: Agents,
    in_flight: int,
    warmup: float,
    window: float,
    meters: tuple[list[Meter], Meter | None],
    *,
    replay: bool = False,
) -> Load:
    loop = asyncio.get_running_loop()
    begin = loop.time()
    w0, w1 = begin + warmup, begin + warmup + window
    latencies: list[float] = []
    stalls: list[tuple[float, float]] = []
    counts = {"done": 0, "errors": 0, "duplicates": 0}
    first_error: list[str] = []

    async def worker(conn: Connection) -> None:
        while loop.time() < w1:
            headers, body = agents.request(replay)
            started = loop.time()
            try:
                status, answer = await conn.request("POST", "/api/v1/ingest", headers, body)
                ok = status == 200 and (b'"accepted"' in answer or b'"duplicate"' in answer)
                if not ok and not first_error:
                    first_error.append(f"HTTP {status}: {answer[:200]!r}")
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                ok = False
                answer = b""
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
            finished = loop.time()
            if w0 <= started < w1:
                latencies.append(finished - started)
                if finished - started > STALL:
                    stalls.append((started, finished - started))
                if ok:
                    counts["done"] += 1
                    counts["duplicates"] += b'"duplicate"' in answer
                else:
                    counts["errors"] += 1

    connections = [Connection(ports[i % len(ports)]) for i in range(in_flight)]
    collector_meters, postgres_meter = meters

    async def measure() -> tuple[list[float], float, float]:
        await asyncio.sleep(w0 - loop.time())
        for meter in collector_meters:
            meter.start()
        if postgres_meter is not None:
            postgres_meter.start()
        cpu0 = _self_cpu()
        await asyncio.sleep(w1 - loop.time())
        used = [meter.stop().cpu_percent for meter in collector_meters]
        pg = postgres_meter.stop().cpu_percent if postgres_meter is not None else 0.0
        return used, pg, 100.0 * (_self_cpu() - cpu0) / window

    measuring = asyncio.create_task(measure())
    await asyncio.gather(*(worker(c) for c in connections))
    used, pg, loadgen = await measuring
    for conn in connections:
        conn.close()
    if first_error:
        print(f"  {in_flight} in flight: first failure: {first_error[0]}", file=sys.stderr)
    # Throughput from the requests started in the window (closed loop: each waits for the last).
    return Load(
        in_flight=in_flight,
        done=counts["done"],
        per_s=counts["done"] / window,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        worst=max(latencies, default=math.nan),
        errors=counts["errors"],
        duplicates=counts["duplicates"],
        collectors_cpu=sum(used),
        postgres_cpu=pg,
        loadgen_cpu=loadgen,
        stalls=stalls,
        began=w0,
        ended=w1,
    )


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def stalls_in_gc(load: Load, group: Sequence[Collector]) -> int:
    """How many of the step's stalls overlap a garbage-collector pause of ≥ STALL / 2."""
    pauses = [(start, start + took) for member in group for start, took, _gen in member.gc_pauses()]
    pauses = [(a, b) for a, b in pauses if b - a >= STALL / 2]
    return sum(any(a < start + took and b > start for a, b in pauses) for start, took in load.stalls)


def ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


@dataclass
class Setup:
    label: str
    backend: str
    collectors: int


SETUPS = (
    Setup("1 collector, SQLite", "sqlite", 1),
    Setup("1 collector, PostgreSQL", "postgresql", 1),
    Setup("2 collectors, PostgreSQL", "postgresql", 2),
)


def ingest_setup(
    setup: Setup, pg: Postgres, tpl: Templates, args: argparse.Namespace, levels: Sequence[int]
) -> list[tuple[Load, int]]:
    """Each concurrency level in turn against one fresh store; (load, stalls in GC) per level."""
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-ha-ingest-") as tmp, _database(pg, setup) as dsn:
        workdir = Path(tmp)
        store = postgres_store(workdir, dsn) if dsn else sqlite_store(workdir)
        tokens = register_agents(
            dsn or str(workdir / "lifeline.db"), [f"a{i:05d}" for i in range(args.agents)]
        )
        agents = Agents(tpl, tokens)
        out = []
        with collectors(workdir, setup.collectors, store) as group:
            meters = (
                [Meter(m.proc.pid, tree=False) for m in group if m.proc is not None],
                Meter(pg.postmaster_pid()) if dsn else None,
            )
            for in_flight in levels:
                load = asyncio.run(
                    closed_loop([m.port for m in group], agents, in_flight, args.warmup, args.window, meters)
                )
                out.append((load, stalls_in_gc(load, group)))
                print(f"  {setup.label}: {_brief(load)}", file=sys.stderr, flush=True)
        return out


def _brief(load: Load) -> str:
    return (
        f"{load.in_flight} in flight: {load.per_s:.0f}/s p50 {ms(load.p50)} p99 {ms(load.p99)} "
        f"max {ms(load.worst)} ms, errors {load.errors}, collectors {load.collectors_cpu:.0f} % "
        f"pg {load.postgres_cpu:.0f} % loadgen {load.loadgen_cpu:.0f} %, stalls {len(load.stalls)}"
    )


@contextlib.contextmanager
def _database(pg: Postgres, setup: Setup) -> Iterator[str]:
    if setup.backend == "sqlite":
        yield ""
        return
    with pg.fresh_database() as dsn:
        yield dsn


def investigation(tpl: Templates, args: argparse.Namespace) -> list[list[object]]:
    """SQLite, collector pinned to CPU 1 and the generator to CPU 0: new batches of a small and a
    larger fleet against the same body replayed, and the stalls beside the collector's GC pauses."""
    pinned = (os.cpu_count() or 1) >= 2
    rows: list[list[object]] = []
    levels = [2, 4] if args.quick else [2, 4, 16]
    large, small = (100, 10) if args.quick else (2000, 100)
    variants = [  # (replayed, agents, in flight, CPython's default gc)
        (False, large, levels, False),
        (False, small, levels[1:2], False),
        (True, large, levels, False),
        (False, large, levels[1:], True),
    ]
    before = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {0})
    try:
        for replay, fleet, steps, default_gc in variants:
            with tempfile.TemporaryDirectory(prefix="lifeline-bench-ha-why-") as tmp:
                workdir = Path(tmp)
                agents = Agents(tpl, register_agents(str(workdir / "lifeline.db"), agent_ids(fleet)))
                pin = {1} if pinned else None
                with collectors(workdir, 1, sqlite_store(workdir), cpus=pin, default_gc=default_gc) as group:
                    meters = ([Meter(m.proc.pid, tree=False) for m in group if m.proc is not None], None)
                    # a first pass stores every agent's first batch (replayed: its only one)
                    warmup = args.warmup + fleet / 300
                    for in_flight in steps:
                        load = asyncio.run(
                            closed_loop(
                                [group[0].port], agents, in_flight, warmup, args.window, meters, replay=replay
                            )
                        )
                        warmup = args.warmup
                        pauses = [
                            took
                            for start, took, gen in group[0].gc_pauses()
                            if gen == 2 and load.began <= start < load.ended
                        ]
                        print(f"  why ({'replayed' if replay else 'new'}): {_brief(load)}", file=sys.stderr)
                        rows.append(
                            [
                                ("same body replayed" if replay else "new batches")
                                + (", CPython's default gc" if default_gc else ""),
                                fleet,
                                in_flight,
                                f"{load.per_s:.0f}",
                                f"{100 * load.duplicates / load.done:.0f}" if load.done else "–",
                                ms(load.p50),
                                ms(load.p99),
                                ms(load.worst),
                                f"{load.collectors_cpu:.0f}",
                                f"{load.per_cpu_s:.0f}",
                                len(load.stalls),
                                stalls_in_gc(load, group),
                                f"{len(pauses)} / {ms(max(pauses, default=math.nan))} / {sum(pauses):.2f}",
                            ]
                        )
    finally:
        os.sched_setaffinity(0, before)
    return rows


# --- 3 and 4: failover and pages ------------------------------------------------------------------


def register_apart(dsn: str, names: Sequence[str]) -> dict[str, str]:
    """Each agent at a site of its own: positions of one site falling silent together are one
    fleet incident by design, and the canaries are to be paged one by one."""
    from lifeline_collector.store import Store

    store = Store(dsn)
    try:
        now_ms = int(time.time() * 1000)
        return {name: store.add_agent(name, site=name, position=name, now_ms=now_ms) for name in names}
    finally:
        store.close()


class Pager:
    """A webhook receiver that counts firing PositionSilent pages per position, with arrival times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.firing: dict[str, list[float]] = {}
        self.others = 0  # firing pages of any other alert (none are expected)
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                now = time.time()
                with pager.lock:
                    for alert in body.get("alerts", []):
                        labels = alert.get("labels", {})
                        if alert.get("status") != "firing":
                            continue
                        if labels.get("alertname") == "PositionSilent":
                            pager.firing.setdefault(labels.get("agent", ""), []).append(now)
                        else:
                            pager.others += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def pages(self, agent: str) -> list[float]:
        with self.lock:
            return list(self.firing.get(agent, []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def one_batch(url: str, token: str, agent: str, tpl: Templates) -> None:
    """The agent's batch, stamped now, through ``url``; it must be accepted."""
    import urllib.request

    now_ms = int(time.time() * 1000)
    body = tpl.lifeline[0] % {b"agent": agent.encode(), b"boot": b"ha", b"seq": 1, **batch_times(now_ms)}
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        f"{url}/api/v1/ingest",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        text = answer.read()
    if b'"accepted"' not in text:
        raise SystemExit(f"{agent}: batch not accepted: {text[:200]!r}")


@dataclass
class Kill:
    takeover: float  # s, kill → the other logs that it leads
    page: float  # s, kill → the canary's page (due 0.3 s after the kill) arrives


SILENT_AFTER = 2.0
DUE_AFTER_KILL = 0.3


def failover(pg: Postgres, tpl: Templates, kills: int) -> tuple[list[Kill], dict[str, int]]:
    pager = Pager()
    try:
        with tempfile.TemporaryDirectory(prefix="lifeline-bench-ha-kill-") as tmp, pg.fresh_database() as dsn:
            workdir = Path(tmp)
            names = ["dark-1", *(f"canary-{k}" for k in range(kills))]
            tokens = register_apart(dsn, names)
            with collectors(
                workdir,
                2,
                postgres_store(workdir, dsn),
                hook=pager.url,
                silent=f"{SILENT_AFTER:g}s",
                log_level="info",
            ) as group:
                _wait(lambda: bool(group[0].terms()), "the first collector did not lead", 30)
                one_batch(group[1].url, tokens["dark-1"], "dark-1", tpl)  # then dark from now on
                _wait(lambda: bool(pager.pages("dark-1")), "the dark position was never paged", 30)
                results = [_kill_round(group, pager, tokens, k, tpl) for k in range(kills)]
                time.sleep(SILENT_AFTER + 1)  # a late duplicate would arrive by now
            counts = {
                "dark pages": len(pager.pages("dark-1")),
                "canary pages": sum(len(pager.pages(f"canary-{k}")) for k in range(kills)),
                "canaries missed": sum(not pager.pages(f"canary-{k}") for k in range(kills)),
                "canaries": kills,
                "other pages": pager.others,
            }
            return results, counts
    finally:
        pager.close()


def _kill_round(group: list[Collector], pager: Pager, tokens: dict[str, str], k: int, tpl: Templates) -> Kill:
    leader = max(group, key=lambda m: max((e for e, _t in m.terms()), default=0))
    other = next(m for m in group if m is not leader)
    epoch = max(e for e, _t in leader.terms())
    canary = f"canary-{k}"
    one_batch(other.url, tokens[canary], canary, tpl)
    stored = time.time()
    time.sleep(max(0.0, stored + SILENT_AFTER - DUE_AFTER_KILL - time.time()))
    killed = leader.kill()
    _wait(lambda: any(e > epoch for e, _t in other.terms()), f"kill {k}: no takeover", 30)
    took = min(t for e, t in other.terms() if e > epoch) - killed
    _wait(lambda: bool(pager.pages(canary)), f"kill {k}: the canary was never paged", 30)
    paged = pager.pages(canary)[0] - killed
    print(f"  kill {k + 1}: takeover {took:.2f} s, fresh page {paged:.2f} s", file=sys.stderr, flush=True)
    leader.start()  # back as the one that waits
    time.sleep(1.0)
    return Kill(took, paged)


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(what)
        time.sleep(0.01)


# --- 5: heartbeats ----------------------------------------------------------------------------------

HEARTBEAT_OK = re.compile(rb'^lifeline_collector_heartbeats_total\{result="ok"\} ([0-9.e+]+)$', re.MULTILINE)


def heartbeats(pg: Postgres, count: int, agents: int, seconds: float) -> dict[str, float]:
    """``agents`` beating, split evenly over ``count`` collectors over PostgreSQL."""
    from lifeline_collector.heartbeat import agent_key, load_master_secret
    from lifeline_collector.store import hash_token

    with tempfile.TemporaryDirectory(prefix="lifeline-bench-ha-hb-") as tmp, pg.fresh_database() as dsn:
        workdir = Path(tmp)
        tokens = register_agents(dsn, [f"hb-{i:05d}" for i in range(agents)])
        master = load_master_secret(str(workdir / "lifeline.db") + ".heartbeat-secret")
        keys = {agent: agent_key(master, agent, hash_token(token)).hex() for agent, token in tokens.items()}
        with collectors(workdir, count, postgres_store(workdir, dsn)) as group:
            # What the collectors spend with no beats (sharing, polling, the ticks): taken out below.
            meters = [Meter(m.proc.pid, tree=False) for m in group if m.proc is not None]
            for meter in meters:
                meter.start()
            time.sleep(min(seconds, 5.0))
            idle = sum(meter.stop().cpu_percent for meter in meters)
            loads = []
            shares = [dict(list(keys.items())[i::count]) for i in range(count)]
            for index, (member, share) in enumerate(zip(group, shares, strict=True)):
                spec = workdir / f"spec-{index}.json"
                spec.write_text(
                    json.dumps({"keys": share, "host": "127.0.0.1", "port": member.port, "seconds": seconds})
                )
                loads.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "heartbeat.py"),
                            "--generate",
                            str(spec),
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            try:
                ready = max(json.loads(_line(load))["ready"] for load in loads)
                time.sleep(max(0.0, ready - time.time()))
                pg_meter = Meter(pg.postmaster_pid())
                for meter in [*meters, pg_meter]:
                    meter.start()
                sent = sum(json.loads(_line(load))["sent"] for load in loads)
                used = [meter.stop().cpu_percent for meter in meters]
                pg_used = pg_meter.stop().cpu_percent
            finally:
                for load in loads:
                    if load.poll() is None:
                        load.kill()
                    load.wait()
            time.sleep(0.5)  # the last beats out of the socket buffers
            got = sum(_accepted(member.url) for member in group)
    cpu = sum(used)
    busy = max(0.0, cpu - idle)
    return {
        "collectors": count,
        "agents": agents,
        "sent": sent / seconds,
        "accepted": got / seconds,
        "dropped": 100.0 * max(0, sent - got) / sent if sent else math.nan,
        "cpu": cpu,
        "idle": idle,
        "pg": pg_used,
        "per_cpu_s": (got / seconds) / (busy / 100) if busy > 0 else math.nan,
        "per_1000": busy / agents * 1000,
    }


def _line(load: subprocess.Popen[str]) -> str:
    assert load.stdout is not None
    line = load.stdout.readline()
    if not line:
        raise SystemExit("the heartbeat load process ended early")
    return line


def _accepted(url: str) -> int:
    status, body = http_get(f"{url}/metrics", timeout=10.0)
    found = HEARTBEAT_OK.search(body) if status == 200 else None
    return int(float(found.group(1))) if found else 0


# --- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows (smoke test)")
    parser.add_argument("--in-flight", default="1,2,4,8,16", help="concurrency levels (closed loop)")
    parser.add_argument("--agents", type=int, default=1000, help="registered agents the batches rotate over")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of load before measuring")
    parser.add_argument("--kills", type=int, default=12, help="kill -9s of the leader (at least 10)")
    parser.add_argument("--beats", default="4000", help="heartbeating agents (comma-separated sizes)")
    parser.add_argument("--only", default="ingest,why,failover,heartbeats", help="which parts to run")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.in_flight.split(",") if x.strip()]
    beats = [int(x) for x in args.beats.split(",") if x.strip()]
    if args.quick:
        levels, args.agents, args.window, args.warmup, args.kills, beats = [1, 4], 100, 2.0, 1.0, 2, [200]
    parts = {p.strip() for p in args.only.split(",")}
    tool("lifeline-collector")  # fails early with the way to install it
    gc.collect()
    tpl = templates()
    load_avg = os.getloadavg()
    print(f"# Collectors side by side — {machine()}")
    print(
        f"load average at the start {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; "
        f"{os.cpu_count()} CPUs shared by the collectors, PostgreSQL (fsync on) and the load generator "
        f"(this process): every figure is what is left of those cores after the others\n"
    )
    with running_postgres(fsync=True) as pg:
        if "ingest" in parts:
            ingest_table(pg, tpl, args, levels)
        if "why" in parts:
            print(
                table(
                    "Why the ingest figures differ: SQLite, collector pinned to CPU 1, generator to CPU 0",
                    [
                        "requests",
                        "agents",
                        "in flight",
                        "batches/s",
                        "duplicate %",
                        "p50 ms",
                        "p99 ms",
                        "max ms",
                        "collector CPU %",
                        "batches per collector CPU-s",
                        f"requests > {STALL * 1000:.0f} ms",
                        "… during a GC pause",
                        "gen-2 GC pauses in the window: count / max ms / total s",
                    ],
                    investigation(tpl, args),
                )
            )
        if "failover" in parts:
            failover_tables(pg, tpl, args.kills)
        if "heartbeats" in parts:
            heartbeat_table(pg, beats, 3.0 if args.quick else 10.0)
    return 0


def ingest_table(pg: Postgres, tpl: Templates, args: argparse.Namespace, levels: Sequence[int]) -> None:
    rows = []
    for setup in SETUPS:
        best = 0.0
        for load, in_gc in ingest_setup(setup, pg, tpl, args, levels):
            saturated = load.per_s < 1.1 * best  # no longer grows with more in flight
            best = max(best, load.per_s)
            rows.append(
                [
                    setup.label,
                    load.in_flight,
                    f"{load.per_s:.0f}",
                    ms(load.p50),
                    ms(load.p99),
                    ms(load.worst),
                    load.errors,
                    f"{load.collectors_cpu:.0f}",
                    f"{load.postgres_cpu:.0f}" if setup.backend == "postgresql" else "–",
                    f"{load.loadgen_cpu:.0f}",
                    f"{load.per_cpu_s:.0f}",
                    f"{len(load.stalls)} ({in_gc})",
                    "yes" if saturated else "no",
                ]
            )
    print(
        table(
            f"Ingest, closed loop ({tpl.samples} samples, {tpl.body_bytes} bytes of JSON a batch; "
            f"{args.agents} agents; {args.warmup:g} s warm-up, {args.window:g} s measured; nothing pinned: "
            "collectors, PostgreSQL and the load generator share the machine's cores)",
            [
                "setup",
                "in flight",
                "batches/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "collectors CPU %",
                "PostgreSQL CPU %",
                "loadgen CPU %",
                "batches per collector CPU-s",
                f"requests > {STALL * 1000:.0f} ms (in a GC pause)",
                "saturated",
            ],
            rows,
        )
    )


def failover_tables(pg: Postgres, tpl: Templates, kills: int) -> None:
    results, counts = failover(pg, tpl, kills)
    takeovers = [r.takeover for r in results]
    pages = [r.page for r in results]

    def spread(values: list[float]) -> list[str]:
        return [f"{min(values):.2f}", f"{statistics.median(values):.2f}", f"{max(values):.2f}"]

    print(
        table(
            f"Leader failover: kill -9 of the leading collector, {len(results)} times (2 collectors over "
            f"PostgreSQL, evaluate_interval 200 ms; the killed one restarted each time)",
            ["from the kill to", "kills", "min s", "median s", "max s"],
            [
                ["the other collector logs that it leads", len(results), *spread(takeovers)],
                [f"a page due {DUE_AFTER_KILL:g} s after the kill arrives", len(results), *spread(pages)],
            ],
        )
    )
    dark_duplicates = max(0, counts["dark pages"] - 1)
    canary_duplicates = counts["canary pages"] - (counts["canaries"] - counts["canaries missed"])
    print(
        table(
            "Pages during the kills (a webhook receiver counting firing PositionSilent pages)",
            [
                "position",
                "kills lived through",
                "pages expected",
                "pages received",
                "duplicates",
                "missed",
            ],
            [
                [
                    "dark since before the first kill",
                    len(results),
                    1,
                    counts["dark pages"],
                    dark_duplicates,
                    int(counts["dark pages"] == 0),
                ],
                [
                    "a canary due just after each kill",
                    1,
                    counts["canaries"],
                    counts["canary pages"],
                    canary_duplicates,
                    counts["canaries missed"],
                ],
            ],
        )
    )
    print(f"firing pages of any other alert (none expected): {counts['other pages']}\n")


def heartbeat_table(pg: Postgres, sizes: Sequence[int], seconds: float) -> None:
    rows = []
    for agents in sizes:
        for count in (1, 2):
            r = heartbeats(pg, count, agents, seconds)
            print(f"  heartbeats: {r}", file=sys.stderr, flush=True)
            rows.append(
                [
                    count,
                    f"{agents:,}",
                    f"{r['sent']:,.0f}",
                    f"{r['accepted']:,.0f}",
                    f"{r['dropped']:.2f}",
                    f"{r['cpu']:.0f}",
                    f"{r['idle']:.0f}",
                    f"{r['pg']:.0f}",
                    f"{r['per_cpu_s']:,.0f}",
                    f"{r['per_1000']:.2f}",
                ]
            )
    print(
        table(
            f"Heartbeats with collectors over PostgreSQL (a beat per agent every 250 ms, {seconds:g} s; "
            "one load process per collector; all share the machine's cores)",
            [
                "collectors",
                "agents",
                "beats/s sent",
                "beats/s accepted",
                "dropped %",
                "collectors CPU %",
                "… of it with no beats",
                "PostgreSQL CPU %",
                "beats per collector CPU-s (less no-beat CPU)",
                "collector CPU % per 1,000 agents (less no-beat CPU)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
