"""bench/fuzz.py runs at a smoke-test size and prints its tables, so it cannot rot.

The figures (status counts, RSS growth over ten thousand cases) belong in docs/security.md.
"""

from __future__ import annotations

import pytest
from bench_kit import run_bench

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_fuzz_bench_runs_and_finds_no_server_error() -> None:
    out = run_bench("fuzz.py", "--cases", "60", "--warmup", "10", timeout=600)
    assert "### Answers" in out
    assert "RSS before MB" in out
