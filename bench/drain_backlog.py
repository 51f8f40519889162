"""Draining the backlog of a collector outage: how long it takes, and what it costs the collector.

The backlog is what a real agent with ``deploy/agent.example.toml`` would have spooled during a
30-minute outage at the default schedule (1 s probes, a batch every 5 s): the agent's own runner,
health model, self-metrics and batcher produce every batch, on a clock stepped one second at a
time, into a real SQLite spool file. The example's four targets are joined by the two gateways a
laptop with broadband and a hotspot discovers (eth0 and usb0); the probes answer with realistic
round-trip times instead of touching the network. Then a real collector (``lifeline-collector
serve``, SQLite store) starts, and the agent's real Shipper drains the spool to it over HTTP with
the example's ``max_batches_per_request``.

Reported: time to drain, batches/s, samples/s, the collector's CPU while draining (utime + stime
from ``/proc/<pid>/stat``) and the shipper's own CPU. Goal: drained in under 60 s.

    .venv/bin/python bench/drain_backlog.py              # a 30-minute outage
    .venv/bin/python bench/drain_backlog.py --minutes 120
    .venv/bin/python bench/drain_backlog.py --quick      # a 1-minute outage (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cpu_seconds, machine, mb, register_agents, self_cpu, start_collector, table

EXAMPLE = REPO / "deploy" / "agent.example.toml"
START = 1_800_000_000.0  # the outage starts here (seconds since the epoch)
RTT = {"router": 0.0021, "internet": 0.0124, "vpn": 0.0183, "cad": 0.0216, "dns": 0.0150, "link": 0.001}


class SteppedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def build_backlog(spool_path: Path, minutes: float, seed: int = 5) -> tuple[str, int, int]:
    """Spool ``minutes`` of batches the agent would have made; returns (agent id, batches, samples)."""
    from lifeline_agent.config import load
    from lifeline_agent.delivery.batcher import Batcher
    from lifeline_agent.delivery.spool import SqliteSpool
    from lifeline_agent.discovery import Gateway, gateway_targets
    from lifeline_agent.probes import REGISTRY, ProbeResult
    from lifeline_agent.service import AgentService

    config = load(EXAMPLE)
    # No desktop pop-ups or traceroutes from a benchmark; everything else as the example says.
    config = dataclasses.replace(
        config, providers=dataclasses.replace(config.providers, desktop_notify=False, traceroute=False)
    )
    gateways = [Gateway("eth0", "192.168.1.1", 100), Gateway("usb0", "192.168.42.1", 600)]
    targets = config.targets + gateway_targets(config, gateways)
    rng = random.Random(seed)
    clock = SteppedClock(START)
    spool = SqliteSpool(str(spool_path), config.spool.max_bytes, config.spool.max_age, clock=clock)
    service = AgentService(config, targets, clock=clock, spool=spool, token="")

    async def answer(target: object, ctx: object) -> ProbeResult:
        count = int(getattr(target, "count", 1))
        base = RTT.get(str(getattr(target, "role", "")), 0.01)
        rtts = tuple(base * rng.uniform(0.9, 1.3) for _ in range(count))
        return ProbeResult(
            True,
            rtt_min=min(rtts),
            rtt_avg=sum(rtts) / count,
            rtt_max=max(rtts),
            sent=count,
            received=count,
            rtts=rtts,
        )

    service.runner.registry = {kind: dataclasses.replace(spec, run=answer) for kind, spec in REGISTRY.items()}
    batcher = Batcher(
        config.agent.id, service.boot_id, service.recorder, spool, clock, service.self_metrics.record
    )
    seconds = int(minutes * 60)
    every = max(1, round(config.schedule.batch_interval))

    async def run() -> None:
        for second in range(1, seconds + 1):
            clock.now = START + second
            await asyncio.gather(*(service.runner.run_once(t) for t in service.discovery.targets))
            service._evaluate(periodic=True)  # the 1 Hz health evaluation and its samples
            if second % every == 0:
                await batcher.flush()

    asyncio.run(run())
    items = spool.pending(1_000_000)
    spool.close()
    return config.agent.id, len(items), sum(item.batch.sample_count() for item in items)


def drain(spool_path: Path, url: str, token: str, collector_pid: int) -> dict[str, float]:
    from lifeline_agent.config import load
    from lifeline_agent.delivery.shipper import Shipper
    from lifeline_agent.delivery.spool import SqliteSpool

    config = load(EXAMPLE)
    collector = dataclasses.replace(
        config.collector, endpoints=(dataclasses.replace(config.collector.endpoints[0], url=url),)
    )
    spool = SqliteSpool(str(spool_path), config.spool.max_bytes, config.spool.max_age)
    shipper = Shipper(config.agent, collector, spool, token, route_file="/nonexistent")

    async def run() -> float:
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(shipper.run(stop))
        while spool.depth():
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        stop.set()
        await task
        await shipper.aclose()
        return elapsed

    cpu0, collector0 = self_cpu(), cpu_seconds([collector_pid])
    elapsed = asyncio.run(run())
    shipper_cpu, collector_cpu = self_cpu() - cpu0, cpu_seconds([collector_pid]) - collector0
    spool.close()
    return {
        "seconds": elapsed,
        "collector_cpu_percent": 100 * collector_cpu / elapsed,
        "collector_cpu_seconds": collector_cpu,
        "shipper_cpu_seconds": shipper_cpu,
        "sent": float(shipper.stats.sent),
        "failures": float(sum(shipper.stats.failures.values())),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the outage (default 30)")
    parser.add_argument("--quick", action="store_true", help="a 1-minute outage (smoke test)")
    args = parser.parse_args(argv)
    minutes = 1.0 if args.quick else args.minutes
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-drain-") as tmp:
        work = Path(tmp)
        spool_path = work / "spool.db"
        started = time.monotonic()
        agent_id, batches, samples = build_backlog(spool_path, minutes)
        built = time.monotonic() - started
        size = os.path.getsize(spool_path)
        db = work / "collector.db"
        token = register_agents(db, [agent_id])[agent_id]
        collector, url = start_collector(work, db)
        try:
            result = drain(spool_path, url, token, collector.pid)
        finally:
            collector.stop()
    seconds = result["seconds"]
    rows = [
        [
            f"{minutes:g} min",
            batches,
            samples,
            mb(size),
            f"{seconds:.2f}",
            f"{batches / seconds:.0f}",
            f"{samples / seconds:.0f}",
            f"{result['collector_cpu_seconds']:.2f}",
            f"{result['collector_cpu_percent']:.0f}",
            f"{result['shipper_cpu_seconds']:.2f}",
            "yes" if seconds < 60 else "NO",
        ]
    ]
    headers = [
        "outage",
        "batches",
        "samples",
        "spool MB",
        "drain s",
        "batches/s",
        "samples/s",
        "collector CPU s",
        "collector CPU % of a core",
        "shipper CPU s",
        "< 60 s",
    ]
    print(table("Draining an outage backlog (deploy/agent.example.toml schedule)", headers, rows))
    print(f"machine: {machine()}")
    print(
        f"backlog built in {built:.1f}s by the agent's own code; delivered {result['sent']:.0f} batches, "
        f"{result['failures']:.0f} failed attempts"
    )
    return 0 if result["sent"] == batches else 1


if __name__ == "__main__":
    raise SystemExit(main())
