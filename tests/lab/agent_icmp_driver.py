"""Run the agent's real ICMP probe N rounds and print every echo's RTT as JSON (not a test).

Used by test_agent_accuracy.py inside the lab's laptop namespace:
``ip netns exec <laptop> python agent_icmp_driver.py HOST ROUNDS COUNT SPACING TIMEOUT``.
"""

import asyncio
import json
import logging
import sys

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import Target
from lifeline_agent.probes import icmp
from lifeline_agent.probes.base import ProbeContext


async def probe(host: str, rounds: int, count: int, spacing: float, timeout: float) -> list[float | None]:
    clock = SystemClock()
    logger = logging.LoggerAdapter(logging.getLogger("lab-driver"), {})
    interval = count * spacing + timeout + 1.0
    target = Target(
        "cad", "cad", "icmp", host, interval=interval, timeout=timeout, count=count, spacing=spacing
    )
    rtts: list[float | None] = []
    for _ in range(rounds):
        ctx = ProbeContext(logger, clock.monotonic() + interval, clock)
        result = await icmp.run(target, ctx)
        assert result.sent == count, result
        rtts.extend(None if r is None else r * 1000.0 for r in (result.rtts or (None,) * count))
    return rtts


if __name__ == "__main__":
    host, rounds, count, spacing, timeout = sys.argv[1:6]
    out = asyncio.run(probe(host, int(rounds), int(count), float(spacing), float(timeout)))
    print(json.dumps({"rtts_ms": out}))
