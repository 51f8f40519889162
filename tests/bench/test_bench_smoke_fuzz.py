"""bench/fuzz.py runs at a smoke-test size and prints its tables, so it cannot rot.

The figures (status counts, RSS growth over ten thousand cases) belong in docs/security.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_fuzz_bench_runs_and_finds_no_server_error() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / "fuzz.py"), "--cases", "60", "--warmup", "10"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "### Answers" in run.stdout
    assert "RSS before MB" in run.stdout
