"""The whole product end to end, with real processes on loopback and a real Alertmanager.

A collector and an agent run as the programs a user starts. The agent's CAD target is a TCP
listener owned by the test: closing it must fire "CAD target unreachable" at a webhook receiver and
at Alertmanager, reopening it must resolve the alert at both, and killing the agent must fire
"position silent".
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from delivery_procs import BIN, Proc, free_port, wait_for

pytestmark = [pytest.mark.system]

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class Webhook:
    """A webhook receiver on loopback that keeps every Alertmanager-format payload it gets."""

    port: int
    payloads: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, alertname: str, status: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                alert
                for payload in self.payloads
                for alert in payload["alerts"]
                if alert["labels"].get("alertname") == alertname and alert["status"] == status
            ]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.payloads.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Processes:
    """Processes a test started, each logging to ``<name>.log`` and stopped by its own PID at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, Proc] = {}

    def start(self, name: str, argv: list[str]) -> Proc:
        proc = self.procs[name] = Proc(name, argv, self.logdir / f"{name}.log").start()
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs.values()):
            proc.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


class CadListener:
    """The stand-in CAD server: a TCP listener the test closes and reopens on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock: socket.socket | None = None
        self.open()

    def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def test_cad_unreachable_fires_and_resolves_then_silence_fires(
    tmp_path: Path, webhook: Webhook, procs: Processes
) -> None:
    am_port, collector_port, metrics_port = free_port(), free_port(), free_port()
    (tmp_path / "am").mkdir()
    (tmp_path / "am.yml").write_text(
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n"
    )
    procs.start(
        "alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
    )
    am = f"http://127.0.0.1:{am_port}"
    collector_cfg = tmp_path / "collector.toml"
    collector_cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:{collector_port}"
public_url = "http://127.0.0.1:{collector_port}"
[store]
path = "{tmp_path / "collector.db"}"
[alerting]
cad_failures = 3
silent_after = "4s"
evaluate_interval = "500ms"
[auth]
read_access = "open"
[[notifiers]]
kind = "webhook"
name = "supervisors"
url = "http://127.0.0.1:{webhook.port}/hook"
[[notifiers]]
kind = "alertmanager"
name = "am"
url = "{am}"
"""
    )
    added = subprocess.run(
        [
            str(BIN / "lifeline-collector"),
            "agents",
            "add",
            "pos-12",
            "--site",
            "north",
            "--position",
            "12",
            "--config",
            str(collector_cfg),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = added.stdout.strip()
    assert token
    assert token not in added.stderr
    (tmp_path / "agent.token").write_text(token + "\n")
    os.chmod(tmp_path / "agent.token", 0o600)

    cad = CadListener()
    agent_cfg = tmp_path / "agent.toml"
    agent_cfg.write_text(
        f"""
[agent]
id = "pos-12"
site = "north"
position = "12"
token_file = "{tmp_path / "agent.token"}"
state_dir = "{tmp_path / "agent-state"}"
[schedule]
batch_interval = "1s"
[discovery]
default_gateways = false
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[collector.endpoints]]
url = "http://127.0.0.1:{collector_port}"
[[targets]]
name = "cad-primary"
role = "cad"
kind = "tcp"
host = "127.0.0.1"
port = {cad.port}
interval = "300ms"
timeout = "200ms"
"""
    )
    procs.start("collector", [str(BIN / "lifeline-collector"), "serve", "--config", str(collector_cfg)])
    base = f"http://127.0.0.1:{collector_port}"
    wait_for("the collector", lambda: httpx.get(f"{base}/healthz").status_code == 200)
    wait_for("alertmanager", lambda: httpx.get(f"{am}/-/ready").status_code == 200)
    agent = procs.start("agent", [str(BIN / "lifeline-agent"), "run", "--config", str(agent_cfg)])

    try:
        # The agent's series appear on the collector's /metrics with agent and site labels.
        def series_up() -> bool:
            text = httpx.get(f"{base}/metrics").text
            return (
                'lifeline_probe_success{agent="pos-12",kind="tcp",path="auto",role="cad",site="north",target="cad-primary"} 1.0'
                in text
                and 'lifeline_agent_up{agent="pos-12",site="north"} 1.0' in text
            )

        wait_for("the agent's series on the collector", series_up)
        assert "lifeline_probe_rtt_seconds{" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert not webhook.alerts("CadTargetUnreachable", "firing")

        # CAD goes away: one page, at the webhook and at Alertmanager — the agent names the CAD
        # server; its failing probe is the same outage, not a second page.
        cad.close()
        wait_for(
            "PositionLayerFailed at the webhook",
            lambda: bool(webhook.alerts("PositionLayerFailed", "firing")),
        )
        fired = webhook.alerts("PositionLayerFailed", "firing")[0]
        assert fired["labels"]["agent"] == "pos-12"
        assert fired["labels"]["site"] == "north"
        assert fired["labels"]["layer"] == "cad"
        assert "lost CAD — CAD server" in fired["annotations"]["summary"]
        assert fired["endsAt"].startswith("0001-01-01")

        def am_alerts() -> list[dict[str, Any]]:
            return [
                a
                for a in httpx.get(f"{am}/api/v2/alerts").json()
                if a["labels"].get("alertname") == "PositionLayerFailed"
            ]

        wait_for(
            "PositionLayerFailed at Alertmanager",
            lambda: any(a["status"]["state"] == "active" for a in am_alerts()),
        )
        api = httpx.get(f"{base}/api/v1/alerts").json()
        assert any(a["labels"]["alertname"] == "PositionLayerFailed" for a in _alert_list(api))

        # CAD comes back: resolved at both.
        cad.open()
        wait_for("resolved at the webhook", lambda: bool(webhook.alerts("PositionLayerFailed", "resolved")))
        wait_for("resolved at Alertmanager", lambda: not am_alerts())
        assert not any(
            a["labels"]["alertname"] == "PositionLayerFailed"
            for a in _alert_list(httpx.get(f"{base}/api/v1/alerts").json())
        )
        assert not webhook.alerts("CadTargetUnreachable", "firing")  # one outage, one page

        # The agent dies without a word: the position goes silent.
        agent.kill()
        wait_for(
            "PositionSilent at the webhook",
            lambda: bool(webhook.alerts("PositionSilent", "firing")),
            timeout=30,
        )
        silent = webhook.alerts("PositionSilent", "firing")[0]
        assert silent["labels"]["agent"] == "pos-12"
        wait_for(
            "agent_up 0",
            lambda: 'lifeline_agent_up{agent="pos-12",site="north"} 0.0' in httpx.get(f"{base}/metrics").text,
        )
    finally:
        cad.close()
        collector = procs.procs.get("collector")
        if collector is not None and not collector.running():
            print(collector.text())


def _alert_list(api: Any) -> list[dict[str, Any]]:
    return list(api["alerts"] if isinstance(api, dict) else api)
