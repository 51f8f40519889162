"""Each benchmark script runs at its smoke-test size and prints its tables, so bench/ cannot rot.

No timing is asserted: the figures belong in docs/benchmarks.md, not in a test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from bench_kit import BENCH, run_bench

PEERS = (
    "/usr/bin/prometheus",
    "/usr/bin/prometheus-blackbox-exporter",
    "/usr/bin/prometheus-pushgateway",
    "/usr/bin/victoria-metrics",
)

pytestmark = [
    pytest.mark.system,
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(os.access(p, os.X_OK) for p in PEERS), reason="Debian packages missing: run `make apt`"
    ),
]


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent's ICMP probes on loopback need root here")
def test_agent_cost_prints_the_side_by_side_table() -> None:
    out = run_bench("agent_cost.py", "--quick")
    assert "### Agent vs blackbox_exporter, same probes per second" in out
    assert "| positions | targets | agent echoes/s" in out
    assert "### Agent start-up" in out
    assert "`import lifeline_agent.service`" in out
    assert "heavy modules loaded by the import:" in out


def test_collector_ingest_prints_every_server() -> None:
    out = run_bench("collector_ingest.py", "--quick")
    assert "### Ingest at rising fleet sizes" in out
    assert "| server " in out
    assert "achieved batches/s" in out
    for server in ("lifeline-collector", "pushgateway", "victoria-metrics"):
        assert f"| {server} " in out


def test_run_all_runs_a_chosen_script() -> None:
    out = run_bench("run_all.py", "--quick", "--only", "collector_ingest")
    assert "## bench/collector_ingest.py --quick" in out
    assert "### Ingest at rising fleet sizes" in out
    assert "(bench/collector_ingest.py: exit 0" in out


def test_run_all_refuses_an_unknown_script() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--only", "no_such_bench"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown benchmark" in result.stderr


def test_no_benchmark_leaves_processes_behind() -> None:
    # The scripts stop what they start by pid; after the runs above nothing of theirs is left.
    if shutil.which("pgrep") is None:
        pytest.skip("pgrep not installed")
    left = subprocess.run(
        ["pgrep", "-f", "lifeline-bench-"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert left == []
