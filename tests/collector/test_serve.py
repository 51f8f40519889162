"""The real `lifeline-collector serve` process on a loopback port: ingest, /metrics, a silence page, SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from collector_kit import Receiver, cad_round, envelope, free_port

pytestmark = [pytest.mark.system]

BIN = Path(sys.executable).parent / "lifeline-collector"


def test_serve_ingest_metrics_silence_and_clean_stop(tmp_path: Path, receiver: Receiver) -> None:
    port = free_port()
    config = tmp_path / "collector.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[store]\npath = "{tmp_path / "lifeline.db"}"\n'
        '[alerting]\nsilent_after = "2s"\nevaluate_interval = "200ms"\n'
        '[auth]\nread_access = "open"\n'
        f'[[notifiers]]\nkind = "webhook"\nname = "pager"\nurl = "{receiver.url}"\n'
    )
    added = subprocess.run(
        [BIN, "agents", "add", "pos-7", "--site", "east", "--position", "7", "--config", config],
        capture_output=True,
        text=True,
        check=True,
    )
    token = added.stdout.strip()
    log_path = tmp_path / "collector.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [BIN, "serve", "--config", config, "--log-level", "debug"], stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "collector did not start"
            time.sleep(0.05)

        now_ms = int(time.time() * 1000)
        body = envelope("pos-7", (0, cad_round(now_ms, True, 0)), sent_ms=now_ms)
        answer = httpx.post(
            f"{base}/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200
        assert answer.json()["results"][0]["status"] == "accepted"
        wrong = httpx.post(f"{base}/api/v1/ingest", content=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401

        metrics = httpx.get(f"{base}/metrics").text
        assert (
            'lifeline_probe_success{agent="pos-7",kind="tcp",role="cad",site="east",target="cad-primary"} 1.0'
            in metrics
        )
        assert 'lifeline_agent_up{agent="pos-7",site="east"} 1.0' in metrics
        promtool = shutil.which("promtool")
        if promtool:
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, check=False
            )
            assert lint.returncode == 0, lint.stdout + lint.stderr

        # The agent stops reporting: the tick notices the silence and pages.
        assert receiver.got.wait(30), "no page for the silent position"
        (page,) = receiver.bodies()
        assert page["alerts"][0]["labels"]["alertname"] == "PositionSilent"
        assert page["alerts"][0]["annotations"]["summary"].startswith("Position 7 (east): silent for ")
        alerts = httpx.get(f"{base}/api/v1/alerts").json()
        assert [a["labels"]["alertname"] for a in alerts] == ["PositionSilent"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert code == 0
    log_text = log_path.read_text()
    assert "Application shutdown complete" in log_text
    assert token not in log_text
    assert "PositionSilent" in log_text
