"""A real collector with people and positions, fed through its ingest API: the board's scenes.

``BoardScene`` starts ``lifeline-collector serve`` on loopback over a fresh store, adds accounts
and agents with the collector's own CLI (as an operator would), and reports for each position
what an agent's health model says (``report``), through ``POST /api/v1/ingest`` with the agent's
token. The browser tests, ``make screenshots`` and ``bench/board.py`` use it; nothing here is a
stand-in: the pages are the collector's real pages.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lifeline_wire import Batch, Envelope, Sample, encode
from lifeline_wire.catalog.health import STATES
from lifeline_wire.layers import CHAIN

BIN = Path(sys.executable).parent
PASSWORD = "lifeline-demo-password"  # noqa: S105 - the demo accounts of a throwaway store
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def judgement(
    ts_ms: int,
    *,
    layers: Mapping[str, str] | None = None,
    verdict: tuple[str, str] = ("none", "healthy"),
    risk: float = 0.0,
    ttl: float = math.inf,
    ready: float = 1.0,
    on_backup: float = 0.0,
) -> list[Sample]:
    """What an agent's health model reports each batch: layers, verdict, risk, time left, backup."""
    states = dict.fromkeys(CHAIN, "ok") | dict(layers or {})
    samples = [
        Sample("lifeline_layer_state", float(STATES[s]), ts_ms, {"layer": n}) for n, s in states.items()
    ]
    samples += [
        Sample("lifeline_verdict_info", 1.0, ts_ms, {"layer": verdict[0], "verdict": verdict[1]}),
        Sample("lifeline_cad_risk_ratio", risk, ts_ms),
        Sample("lifeline_cad_time_to_loss_seconds", ttl, ts_ms),
        Sample("lifeline_failover_ready", ready, ts_ms),
        Sample("lifeline_on_backup", on_backup, ts_ms),
    ]
    return samples


def probes(ts_ms: int, rtt: float, loss: float = 0.0, path: str = "primary") -> list[Sample]:
    labels = {"target": "cad", "role": "cad", "path": path, "kind": "tcp"}
    return [
        Sample("lifeline_probe_rtt_seconds", rtt, ts_ms, labels | {"stat": "avg"}),
        Sample("lifeline_probe_loss_ratio", loss, ts_ms, labels),
        Sample("lifeline_probe_jitter_seconds", rtt / 10, ts_ms, labels),
        Sample("lifeline_probe_success", 0.0 if loss >= 1 else 1.0, ts_ms, labels),
    ]


@dataclass
class Position:
    id: str
    site: str
    number: str
    token: str
    seq: int = 0


@dataclass
class BoardScene:
    workdir: Path
    extra_config: str = ""
    port: int = field(default_factory=free_port)
    positions: dict[str, Position] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    admin_token: str = "board-scene-admin-token-0123456789"  # noqa: S105 - a throwaway store

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.workdir / "collector.toml"

    def write_config(self, notifier_url: str = "") -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "admin.token").write_text(self.admin_token)
        notifier = (
            f'[[notifiers]]\nkind = "webhook"\nname = "supervisors"\nurl = "{notifier_url}"\n'
            if notifier_url
            else ""
        )
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\npublic_url = "{self.url}"\n'
            f'[store]\npath = "{self.workdir / "collector.db"}"\n'
            '[alerting]\nsilent_after = "30s"\nevaluate_interval = "250ms"\n'
            f'[api]\nadmin_token_file = "{self.workdir / "admin.token"}"\n'
            f'[heartbeat]\nlisten = "127.0.0.1:0"\n' + self.extra_config + notifier
        )

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(BIN / "lifeline-collector"), *args, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"lifeline-collector {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def add_user(self, name: str, role: str, password: str = PASSWORD) -> None:
        self.cli("users", "add", name, "--role", role, "--password-stdin", stdin=password + "\n")

    def add_position(self, agent_id: str, site: str, number: str) -> Position:
        token = self.cli("agents", "add", agent_id, "--site", site, "--position", number).strip()
        position = self.positions[agent_id] = Position(agent_id, site, number, token)
        return position

    def start(self) -> None:
        log = open(self.workdir / "collector.log", "ab")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            [str(BIN / "lifeline-collector"), "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"collector did not start: {(self.workdir / 'collector.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def report(
        self, agent_id: str, samples: list[Sample] | None = None, *, priority: bool = False, **kw: Any
    ) -> None:
        """One batch from the position's agent (``samples`` as given, or its judgement from ``kw``)."""
        position = self.positions[agent_id]
        position.seq += 1
        now_ms = int(time.time() * 1000)
        batch = Batch(
            agent_id=agent_id,
            boot_id="scene",
            seq=position.seq,
            created_ms=now_ms,
            samples=samples if samples is not None else judgement(now_ms, **kw),
            priority=priority,
        )
        body = encode(
            Envelope(version=1, batches=[batch], sent_ms=now_ms, site=position.site, position=position.number)
        )
        answer = httpx.post(
            f"{self.url}/api/v1/ingest",
            content=body,
            headers={"Authorization": f"Bearer {position.token}", "Content-Type": "application/json"},
            timeout=10,
        )
        answer.raise_for_status()


def demo(scene: BoardScene, sites: int = 3, per_site: int = 6) -> None:
    """A small center: most positions fine, one down, one at risk, one on its hotspot, one degraded."""
    names = ("north", "south", "east", "west")[:sites]
    for s, site in enumerate(names):
        for n in range(1, per_site + 1):
            scene.add_position(f"{site}-{n:02d}", site, str(s * 100 + n))


def feed_demo(scene: BoardScene, history_minutes: int = 0) -> None:
    """Reports for ``demo``'s positions; ``history_minutes`` of probe rounds first (for the graphs)."""
    now_ms = int(time.time() * 1000)
    for agent_id in scene.positions:
        history: list[Sample] = []
        for minute in range(history_minutes, 0, -1):
            ts = now_ms - minute * 60_000
            wobble = 0.004 * math.sin(minute / 7 + len(agent_id))
            loss = 0.12 if agent_id == "north-02" and minute < 20 else 0.0
            history += probes(ts, 0.021 + wobble, loss) + probes(ts, 0.064 + wobble, 0.0, "backup")
            history += probes(ts, 0.034 + wobble, loss, "tunnel")
        for start in range(0, len(history), 240):  # the backlog in batches of 20 minutes
            scene.report(agent_id, history[start : start + 240])
    for agent_id in scene.positions:
        if agent_id == "north-02":
            scene.report(
                agent_id,
                layers={"vpn": "failed"},
                verdict=("vpn", "VPN tunnel down"),
                ready=0.0,
                priority=True,
            )
        elif agent_id == "north-04":
            scene.report(
                agent_id,
                layers={"internet": "degraded"},
                verdict=("internet", "home internet losing packets"),
                risk=0.7,
                ttl=180.0,
            )
        elif agent_id == "south-03":
            scene.report(
                agent_id,
                layers={"internet": "failed"},
                verdict=("internet", "home internet (ISP) down"),
                on_backup=1.0,
                ready=1.0,
            )
        elif agent_id == "east-05":
            scene.report(agent_id, layers={"link": "degraded"}, verdict=("link", "Wi-Fi signal weak"))
        else:
            scene.report(agent_id)
