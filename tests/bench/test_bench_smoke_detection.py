"""bench/detection.py runs at its smoke-test size (--quick) and prints its table, so it cannot rot.

No figure is asserted: detection latency, lead time and false pages belong in docs/benchmarks.md.
"""

from __future__ import annotations

import os

import pytest
from bench_kit import run_bench

PEERS = ("/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager", "/usr/bin/prometheus-blackbox-exporter")

pytestmark = [
    pytest.mark.lab,
    pytest.mark.system,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (CI runs as root)"),
    pytest.mark.skipif(
        not all(os.access(p, os.X_OK) for p in PEERS), reason="Debian packages missing: run `make apt`"
    ),
]


def test_detection_quick_prints_its_table() -> None:
    out = run_bench("detection.py", "--quick", timeout=600)
    assert "### Detection and lead time: Lifeline vs blackbox_exporter + Prometheus + Alertmanager" in out
    assert "| metric | goal | Lifeline | conventional stack | goal met (Lifeline) |" in out
    assert "| cad-server-down |" in out
    assert "| loss-spikes-survived |" in out
