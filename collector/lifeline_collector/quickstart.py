"""``make run``: a collector on its embedded default (SQLite) and an agent on this machine.

Writes both configs and an agent token under ``var/quickstart/`` (kept between runs, so the
position's history survives a restart), starts ``lifeline-collector serve`` and ``lifeline-agent
run`` as child processes, prints where to look, and stops both cleanly on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from lifeline_collector.store import Store

AGENT_ID = "this-laptop"
SITE = "local"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _collector_toml(base: Path, port: int) -> str:
    return f"""# Written by `make run` (lifeline-collector quickstart). Edit freely; it is kept between runs.
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
path = "{base / "collector.db"}"

[alerting]
cad_failures = 4
silent_after = "15s"
"""


def _agent_toml(base: Path, collector_port: int, metrics_port: int) -> str:
    position = socket.gethostname()[:64] or "local"
    return f"""# Written by `make run` (lifeline-collector quickstart). Edit freely; it is kept between runs.
[agent]
id = "{AGENT_ID}"
site = "{SITE}"
position = "{position}"
token_file = "{base / "agent.token"}"
state_dir = "{base / "agent"}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[schedule]
batch_interval = "5s"

[discovery]
default_gateways = true   # the home router: every default gateway is probed as role "router"

[[collector.endpoints]]
url = "http://127.0.0.1:{collector_port}"

# Configured targets. Replace the stand-in CAD target with your CAD server's address and port.
[[targets]]
name = "internet-icmp"
role = "internet"
kind = "icmp"
host = "1.1.1.1"
count = 3
spacing = "100ms"
timeout = "700ms"
interval = "1s"

[[targets]]
name = "cad-standin"
role = "cad"
kind = "tcp"
host = "127.0.0.1"
port = {collector_port}
interval = "1s"
"""


def _ensure_files(base: Path) -> tuple[Path, Path, int]:
    base.mkdir(parents=True, exist_ok=True)
    (base / "agent").mkdir(exist_ok=True)
    collector_cfg = base / "collector.toml"
    agent_cfg = base / "agent.toml"
    if not collector_cfg.exists() or not agent_cfg.exists():
        port = _pick_port(8480)
        collector_cfg.write_text(_collector_toml(base, port), encoding="utf-8")
        agent_cfg.write_text(_agent_toml(base, port, _pick_port(9464)), encoding="utf-8")
    token_file = base / "agent.token"
    store = Store(str(base / "collector.db"))
    try:
        if store.agent(AGENT_ID) is None or not token_file.exists():
            if store.agent(AGENT_ID) is not None:
                store.revoke_agent(AGENT_ID, now_ms=int(time.time() * 1000))
            token = store.add_agent(
                AGENT_ID, site=SITE, position=socket.gethostname()[:64], now_ms=int(time.time() * 1000)
            )
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token + "\n")
    finally:
        store.close()
    port = int(collector_cfg.read_text(encoding="utf-8").split('listen = "127.0.0.1:')[1].split('"')[0])
    return collector_cfg, agent_cfg, port


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        time.sleep(0.2)
    return False


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(base_dir: str | None = None) -> int:
    base = Path(base_dir or os.environ.get("LIFELINE_QUICKSTART_DIR", "var/quickstart")).resolve()
    collector_cfg, agent_cfg, port = _ensure_files(base)
    bindir = Path(sys.executable).parent
    collector = subprocess.Popen(
        [str(bindir / "lifeline-collector"), "serve", "--config", str(collector_cfg)]
    )
    procs = [collector]
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not _wait_healthy(f"http://127.0.0.1:{port}/healthz", collector):
            print("lifeline: the collector did not start; see its log above", file=sys.stderr)
            return 1
        agent = subprocess.Popen([str(bindir / "lifeline-agent"), "run", "--config", str(agent_cfg)])
        procs.append(agent)
        metrics = agent_cfg.read_text(encoding="utf-8").split('listen = "')[1].split('"')[0]
        print(
            f"""
Lifeline is running (Ctrl-C stops both).
  supervisor's board   http://127.0.0.1:{port}/
    (log in as yourself: {bindir / "lifeline-collector"} users add NAME --role admin --config {collector_cfg})
  this position        http://127.0.0.1:{port}/positions/{AGENT_ID}
  alerts API           http://127.0.0.1:{port}/api/v1/alerts (after logging in, or with the API token)
  collector /metrics   http://127.0.0.1:{port}/metrics
  agent /metrics       http://{metrics}/metrics
  dispatcher's view    {bindir / "lifeline-agent"} status --config {agent_cfg}
  configs and data     {base}
""",
            flush=True,
        )
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    name = "collector" if proc is collector else "agent"
                    print(f"lifeline: the {name} exited with status {proc.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(procs)
