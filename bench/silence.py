"""What finding silence costs the collector: the deadline heap under 10,000 beating agents.

    .venv/bin/python bench/silence.py                 # 10,000 agents, 60 simulated seconds
    .venv/bin/python bench/silence.py --agents 50000

Agents beat every 0.25 s (the receiver writes ``last_beat``; its own cost is bench/heartbeat.py's);
the collector checks deadlines every 0.2 s (``alerting.silence_check_interval``) and evaluates
only the positions whose silence began. A share of the agents is cut off half-way, to show the
cost of the evaluations silence brings. The clock is simulated; the CPU time is real.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

from lifeline_collector.clock import ManualClock
from lifeline_collector.config import parse
from lifeline_collector.service import Collector
from lifeline_wire.heartbeat import BeatDigest

BEAT = 0.25
CHECK = 0.2
DIGEST = BeatDigest("none", "ok", 0.0, None, True, False)


def run(agents: int, seconds: float, cut_share: float) -> tuple[float, float, int, int]:
    """CPU seconds of the silence checks, the same per simulated second, pages, evaluations."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock(1_700_000_000.0)
        config = parse(
            {"store": {"path": str(Path(tmp) / "c.db")}, "heartbeat": {"enabled": False}}, "(bench)"
        )
        service = Collector(config, clock=clock)
        ids = [f"pos-{i}" for i in range(agents)]
        for agent_id in ids:
            service.store.add_agent(agent_id, site="north", position=agent_id[4:], now_ms=0)
        service.fleet.sync_agents(service.store.agents())
        views = [service.fleet.agents[a] for a in ids]
        for view in views:
            view.last_beat, view.beat, view.beat_paths = clock.now(), DIGEST, {"tunnel": clock.now()}
            service.heard_now(view.id)
        evaluated = 0
        evaluate = service.engine.evaluate

        def counting(batch, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal evaluated
            batch = list(batch)
            evaluated += len(batch)
            return evaluate(batch, **kwargs)

        service.engine.evaluate = counting  # type: ignore[method-assign]
        cut = set(ids[: int(agents * cut_share)])
        spent = 0.0
        now = 0.0
        next_check = CHECK
        while now < seconds:
            now += BEAT
            clock.advance(BEAT)
            stamp = clock.now()
            for view in views:  # the receiver thread's writes, not measured
                if view.id in cut and now > seconds / 2:
                    continue
                view.last_beat = stamp
            while next_check <= now:
                next_check += CHECK
                started = time.process_time()
                service.check_silence()
                spent += time.process_time() - started
        pages = sum(1 for a in service.engine.active() if a.name == "PositionSilent")
        service.store.close()
        return spent, spent / seconds, pages, evaluated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated seconds (default 60)")
    parser.add_argument("--cut", type=float, default=0.01, help="share of agents cut off half-way")
    args = parser.parse_args()
    spent, per_second, pages, evaluated = run(args.agents, args.seconds, args.cut)
    print("### Silence detection cost (deadline heap, checked every 0.2 s)")
    print()
    print(
        f"{dt.datetime.now(dt.UTC).date().isoformat()}, Python {platform.python_version()},"
        f" {platform.machine()}"
    )
    print()
    print(
        "| agents | beat | simulated | cut off half-way | CPU in silence checks | per second | pages"
        " | evaluations |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.agents} | {BEAT:g} s | {args.seconds:g} s | {args.cut:.0%} | {spent * 1000:.0f} ms |"
        f" {per_second * 1000:.2f} ms/s ({per_second * 100:.2f} % of a core) | {pages} | {evaluated} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
