"""bench/heartbeat.py runs at its smoke-test size and prints its tables.

No timing is asserted: the figures belong in docs/heartbeat.md, not in a test.
"""

from __future__ import annotations

import re

import pytest
from bench_kit import run_bench

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_heartbeat_bench_prints_its_tables() -> None:
    out = run_bench("heartbeat.py", "--quick", timeout=300)
    assert "### Collector receiving heartbeats" in out
    assert "| agents | beats/s sent | collector CPU % | CPU % per 1,000 agents | dropped % |" in out
    assert re.search(r"^\| 200 +\| 800 +\|", out, re.MULTILINE), out
    assert "largest fleet measured with < 1 % of beats dropped on one core:" in out
    assert "### Receiver shapes in one process" in out
    for shape in ("thread", "asyncio"):
        assert re.search(rf"^\| {shape} +\| 2,000 +\|", out, re.MULTILINE), out
    agent = re.search(r"^\| 5 +\| (\d+) +\| (\d+) +\| [0-9.]+ +\| [0-9.]+ +\|$", out, re.MULTILINE)
    assert agent is not None, out
    # 5 s of the tunnel path at 250 ms and a fallback path every second: about 25 datagrams.
    assert int(agent.group(1)) >= 15
    assert int(agent.group(2)) == 0
