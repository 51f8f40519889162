"""The wired agent in-process against real loopback peers, with the real sources of this machine.

A CAD listener on loopback closes: the health model names the CAD layer, the state change leaves in
a priority batch at once, the dispatcher's warning reaches the log and status.json, and
``lifeline-agent status`` renders the screen from that real status.json.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from lifeline_agent.cli import main as cli
from lifeline_agent.config import load
from lifeline_agent.service import AgentService
from lifeline_agent.sources import build_sources
from lifeline_agent.status import assessment_from_dict, read_status


def write_config(tmp_path: Path, collector_url: str, cad_port: int) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "ws-9"
site = "north"
position = "9"
state_dir = "{tmp_path}"
token = "t0k"

[schedule]
batch_interval = "5s"

[discovery]
default_gateways = false

[metrics]
listen = "127.0.0.1:0"

[providers]
desktop_notify = false

[collector]
endpoints = [{{ url = "{collector_url}" }}]

[[targets]]
name = "cad"
role = "cad"
kind = "tcp"
host = "127.0.0.1"
port = {cad_port}
interval = "200ms"
timeout = "150ms"
""",
        encoding="utf-8",
    )
    return path


async def wait_for(condition: Any, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def metric_values(text: str, name: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(rf'^{name}\{{provider="([^"]+)"\}} (\S+)$', text, flags=re.MULTILINE)
    }


@pytest.mark.system
def test_cad_loss_is_judged_sent_at_once_warned_and_shown(
    tmp_path: Path, fake_collector: Any, caplog: pytest.LogCaptureFixture
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    config_path = write_config(tmp_path, fake_collector.url, listener.getsockname()[1])
    config = load(config_path)
    service = AgentService(config)
    metrics_text = ""
    screen = None

    def cad_failed() -> list[Any]:
        return [
            (b, e)
            for b in fake_collector.batches
            for e in b.events
            if e.type == "health.layer"
            and e.attributes["layer"] == "cad"
            and e.attributes["state"] == "failed"
        ]

    async def main() -> None:
        nonlocal metrics_text, screen
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await wait_for(
                lambda: service.health.last is not None and service.health.last.layer("cad").state == "ok"
            )
            listener.close()  # CAD goes away
            await wait_for(cad_failed)
            await wait_for(lambda: (read_status(str(tmp_path)).get("warning") or {}).get("text"))
            assert service.metrics_server is not None
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{service.metrics_server.port}/metrics")
            metrics_text = resp.text
            screen = await asyncio.to_thread(
                CliRunner().invoke, cli, ["status", "--config", str(config_path)]
            )
        finally:
            stop.set()
            await task

    with caplog.at_level(logging.INFO, logger="lifeline_agent"):
        try:
            asyncio.run(main())
        finally:
            listener.close()

    # The state change did not wait for the 5 s batch interval: it left in a priority batch.
    batch, event = cad_failed()[0]
    assert batch.priority
    assert event.attributes["previous"] in ("ok", "degraded")
    assert str(event.attributes["reason"]).startswith("CAD server")
    verdicts = [e for b in fake_collector.batches for e in b.events if e.type == "health.verdict"]
    assert verdicts[-1].attributes["layer"] == "cad"
    samples = {s.name for b in fake_collector.batches for s in b.every_sample()}
    assert {"lifeline_layer_state", "lifeline_verdict_info", "lifeline_cad_risk_ratio"} <= samples

    # Providers: every source this machine has, plus netlink/traceroute/desktop, each 0 or 1 as it is.
    exported = metric_values(metrics_text, "lifeline_provider_available")
    expected = {s.name: float(s.available().ok) for s in build_sources(config)}
    assert {k: exported[k] for k in expected} == expected
    assert exported["desktop_notify"] == 0.0  # off in this config: never shown as working
    assert {"netlink", "traceroute"} <= set(exported)

    # The dispatcher's warning: in the log at WARNING, and in status.json.
    warnings = [r for r in caplog.records if r.name == "lifeline_agent.warn" and r.levelno == logging.WARNING]
    assert warnings
    assert "CAD server" in warnings[0].getMessage()
    status = read_status(str(tmp_path))
    assert status["running"] is False
    assessment = assessment_from_dict(status["assessment"])
    assert assessment.verdict_layer == "cad"
    assert assessment.verdict.startswith("CAD server")
    assert assessment.verdict in (assessment.warning or "")
    assert status["routes"]["cad"][0] == {
        "target": "cad",
        "address": "127.0.0.1",
        "interface": "lo",
        "source": "127.0.0.1",
        "via_tunnel": False,
        "misrouted": False,
    }

    # The one screen, rendered by the CLI from the status.json the running agent wrote.
    assert screen is not None
    assert screen.exit_code == 0, screen.output
    assert "CAD connection: FAILING — CAD server" in screen.stdout
    assert "✖ CAD server" in screen.stdout
    assert "Backup (hotspot): not checked" in screen.stdout
    assert "⚠ Your CAD connection is failing" in screen.stdout
    assert "running, updated" in screen.stdout

    # Stopped now: the same screen says it is out of date, and exits 1.
    stale = CliRunner().invoke(cli, ["status", "--config", str(config_path)])
    assert stale.exit_code == 1
    assert "Lifeline has stopped" in stale.stdout


def test_status_without_an_assessment_or_with_a_broken_one(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "http://127.0.0.1:9", 9)
    base = {"agent": "ws-9", "running": True, "updated_ms": int(time.time() * 1000), "targets": []}
    (tmp_path / "status.json").write_text(__import__("json").dumps({**base, "assessment": None}))
    shown = CliRunner().invoke(cli, ["status", "--config", str(config_path)])
    assert shown.exit_code == 0
    assert "no assessment yet" in shown.stdout
    (tmp_path / "status.json").write_text(__import__("json").dumps({**base, "assessment": {"at": 1}}))
    shown = CliRunner().invoke(cli, ["status", "--config", str(config_path)])
    assert "cannot read the assessment" in shown.stdout
