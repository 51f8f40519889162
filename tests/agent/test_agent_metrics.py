"""The local /metrics page: catalog types, own registry, live self-metrics."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client import generate_latest

from lifeline_agent.metrics import MetricsServer, registry_for
from lifeline_agent.recorder import Recorder, series_key

LABELS = {"target": "cad", "role": "cad", "path": "tunnel", "kind": "tcp"}


def exposition() -> str:
    rec = Recorder()
    rec.sample("lifeline_probe_success", 1, LABELS)
    rec.sample("lifeline_probe_packets_sent_total", 12, LABELS)
    rec.sample("lifeline_probe_rtt_seconds", 0.012, {**LABELS, "stat": "avg"})
    live = {series_key("lifeline_agent_spool_batches", {}): 3.0}
    return generate_latest(registry_for(rec, lambda: live)).decode()


def test_series_are_typed_as_the_catalog_declares() -> None:
    text = exposition()
    assert "# TYPE lifeline_probe_success gauge" in text
    assert "# TYPE lifeline_probe_packets_sent_total counter" in text
    assert 'lifeline_probe_packets_sent_total{kind="tcp",path="tunnel",role="cad",target="cad"} 12.0' in text
    assert (
        'lifeline_probe_rtt_seconds{kind="tcp",path="tunnel",role="cad",stat="avg",target="cad"} 0.012'
        in text
    )
    assert "lifeline_agent_spool_batches 3.0" in text


def test_own_registry_not_the_global_one() -> None:
    exposition()
    assert b"lifeline_probe_success" not in generate_latest(GLOBAL_REGISTRY)


@pytest.mark.system
def test_served_page_passes_promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    rec = Recorder()
    rec.sample("lifeline_probe_success", 0, LABELS)
    rec.sample("lifeline_probe_packets_received_total", 5, LABELS)
    server = MetricsServer("127.0.0.1:0", registry_for(rec))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
    finally:
        server.close()
    assert "lifeline_probe_success" in body
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_only_the_current_verdict_is_on_the_page() -> None:
    rec = Recorder()
    for words in ("no measurements yet", "healthy", "home internet losing packets"):
        rec.sample("lifeline_verdict_info", 1, {"layer": "none", "cause": "none", "verdict": words})
    text = generate_latest(registry_for(rec)).decode()
    lines = [line for line in text.splitlines() if line.startswith("lifeline_verdict_info{")]
    assert lines == [
        'lifeline_verdict_info{cause="none",layer="none",verdict="home internet losing packets"} 1.0'
    ]
