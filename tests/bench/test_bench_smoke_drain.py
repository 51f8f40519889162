"""bench/drain_backlog.py runs at its smoke-test size (a 1-minute outage) and prints its table.

No timing is asserted: the figures belong in docs/benchmarks.md, not in a test.
"""

from __future__ import annotations

import re

import pytest
from bench_kit import run_bench

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_drain_backlog_prints_its_table_and_delivers_every_batch() -> None:
    out = run_bench("drain_backlog.py", "--quick", timeout=240)
    assert "### Draining an outage backlog (deploy/agent.example.toml schedule)" in out
    assert "| outage | batches | samples | spool MB | drain s | batches/s | samples/s |" in out
    row = re.search(r"^\| 1 min +\| (\d+) +\| (\d+) ", out, re.MULTILINE)
    assert row is not None, out
    # A minute at a 5 s batch interval is 12 batches, each carrying what six targets produced.
    assert int(row.group(1)) == 12
    assert int(row.group(2)) > 12 * 100
    assert "delivered 12 batches, 0 failed attempts" in out
