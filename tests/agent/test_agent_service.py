"""The whole agent in-process against real loopback peers: probe → batch → spool → collector."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline_agent.config import parse
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_agent.service import AgentService
from lifeline_agent.status import read_status


def config_for(tmp_path: Path, collector_url: str, cad_port: int) -> Any:
    return parse(
        {
            "agent": {
                "id": "ws-7",
                "site": "north",
                "position": "7",
                "state_dir": str(tmp_path),
                "token": "t0k",
            },
            "schedule": {"batch_interval": "500ms"},
            "discovery": {"default_gateways": False},
            "metrics": {"listen": "127.0.0.1:0"},
            "collector": {"endpoints": [{"url": collector_url}]},
            "targets": [
                {
                    "name": "cad",
                    "role": "cad",
                    "kind": "tcp",
                    "host": "127.0.0.1",
                    "port": cad_port,
                    "interval": "200ms",
                    "timeout": "150ms",
                }
            ],
        }
    )


async def wait_for(condition: Any, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.system
def test_agent_delivers_state_changes_first_and_spools_the_last_batch(
    tmp_path: Path, fake_collector: Any
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    config = config_for(tmp_path, fake_collector.url, port)
    service = AgentService(config)
    metrics_text = ""

    def cad_events(state: str) -> list[Any]:
        return [
            (b, e)
            for b in fake_collector.batches
            for e in b.events
            if e.type == "probe.state_change" and e.attributes["state"] == state
        ]

    async def main() -> None:
        nonlocal metrics_text
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await wait_for(lambda: len(fake_collector.batches) >= 2)
            listener.close()  # CAD goes away
            await wait_for(lambda: cad_events("down"))
            assert service.metrics_server is not None
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{service.metrics_server.port}/metrics")
            metrics_text = resp.text
        finally:
            stop.set()
            await task

    try:
        asyncio.run(main())
    finally:
        listener.close()

    batch, event = cad_events("down")[0]
    assert batch.priority  # a CAD state change is sent at once, ahead of the interval
    assert (event.attributes["target"], event.attributes["reason"]) == ("cad", "refused")
    assert fake_collector.requests[0][2] == "Bearer t0k"

    # Every batch of this boot is either at the collector or still spooled: seq 0..n, once each.
    spool = SqliteSpool(config.spool_path)
    try:
        spooled = [item.batch for item in spool.pending(1000)]
    finally:
        spool.close()
    everything = fake_collector.batches + spooled
    seqs = sorted(b.seq for b in everything)
    assert seqs == list(range(len(seqs)))
    assert {b.boot_id for b in everything} == {service.boot_id}
    assert any(e.type == "agent.stop" for b in everything for e in b.events)
    assert any(e.type == "agent.start" for b in everything for e in b.events)

    success = [s for b in everything for s in b.every_sample() if s.name == "lifeline_probe_success"]
    assert {s.value for s in success} == {0.0, 1.0}
    assert all(s.labels == {"target": "cad", "role": "cad", "path": "auto", "kind": "tcp"} for s in success)

    status = read_status(str(tmp_path))
    assert status["running"] is False
    assert status["targets"][0]["name"] == "cad"
    assert status["targets"][0]["up"] is False

    assert 'lifeline_probe_success{kind="tcp",path="auto",role="cad",target="cad"} 0.0' in metrics_text
    assert 'lifeline_agent_info{position="7",version=' in metrics_text
    assert "# TYPE lifeline_probe_packets_sent_total counter" in metrics_text
    if shutil.which("promtool"):
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=metrics_text, capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_once_probes_every_target_and_sends_nothing(tmp_path: Path, tcp_listener: tuple[str, int]) -> None:
    config = config_for(tmp_path, "http://127.0.0.1:9", tcp_listener[1])
    batch = asyncio.run(AgentService(config).once())
    assert batch.seq == 0
    assert batch.agent_id == "ws-7"
    names = {s.name for s in batch.every_sample()}
    assert {"lifeline_probe_success", "lifeline_probe_rtt_seconds", "lifeline_agent_info"} <= names
    assert not (tmp_path / "spool.db").exists()
    assert json.dumps(batch.every_sample()[0].labels)
