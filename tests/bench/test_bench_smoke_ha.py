"""bench/collector_ha.py runs at its smoke-test size and prints every table with its rows.

No timing is asserted: the figures belong in docs/benchmarks.md. What is asserted is what the
tables must hold whatever the machine: every setup and concurrency has its row, no request failed,
and the kills cost no page and sent none twice.
"""

from __future__ import annotations

import re

import pytest
from bench_kit import run_bench

from lifeline_lab.postgres import postgres_bin

pytestmark = [
    pytest.mark.system,
    pytest.mark.slow,
    pytest.mark.skipif(postgres_bin() is None, reason="postgresql is not installed (make test installs it)"),
]


def _row(out: str, *cells: str) -> list[str]:
    """The table row whose first cells are ``cells``, split into its cells."""
    pattern = r"^\| " + r" +\| ".join(re.escape(c) for c in cells) + r" +\|(.*)$"
    found = re.search(pattern, out, re.MULTILINE)
    assert found is not None, f"no row {cells}:\n{out}"
    return [*cells, *(c.strip() for c in found.group(1).split("|")[:-1])]


def test_collector_ha_bench_prints_its_tables() -> None:
    out = run_bench("collector_ha.py", "--quick", timeout=600)
    assert "shared by the collectors, PostgreSQL (fsync on) and the load generator" in out

    assert "### Ingest, closed loop" in out
    for setup in ("1 collector, SQLite", "1 collector, PostgreSQL", "2 collectors, PostgreSQL"):
        for in_flight in ("1", "4"):
            row = _row(out, setup, in_flight)
            assert int(row[2]) > 0  # batches/s
            assert row[6] == "0"  # errors

    assert "### Why the ingest figures differ" in out
    for in_flight in ("2", "4"):
        assert _row(out, "new batches", "100", in_flight)[4] == "0"  # duplicate %
        assert _row(out, "same body replayed", "100", in_flight)[4] == "100"
    assert _row(out, "new batches", "10", "4")[4] == "0"
    assert _row(out, "new batches, CPython's default gc", "100", "4")[4] == "0"

    assert "### Leader failover: kill -9 of the leading collector, 2 times" in out
    assert _row(out, "the other collector logs that it leads")[1] == "2"
    assert _row(out, "a page due 0.3 s after the kill arrives")[1] == "2"

    assert "### Pages during the kills" in out
    dark = _row(out, "dark since before the first kill")
    assert dark[1:] == ["2", "1", "1", "0", "0"]  # kills, expected, received, duplicates, missed
    canaries = _row(out, "a canary due just after each kill")
    assert canaries[1:] == ["1", "2", "2", "0", "0"]
    assert "firing pages of any other alert (none expected): 0" in out

    assert "### Heartbeats with collectors over PostgreSQL" in out
    for collectors in ("1", "2"):
        row = _row(out, collectors, "200")
        assert row[2] == "800"  # beats/s sent: 200 agents, every 250 ms
        assert int(row[3].replace(",", "")) > 0  # accepted
