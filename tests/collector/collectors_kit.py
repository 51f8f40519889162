"""Several real `lifeline-collector serve` processes over one PostgreSQL, for the system tests of
collectors side by side: their configs, starting and stopping them, and an agent's requests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from collector_kit import cad_round, envelope, free_port

BIN = Path(sys.executable).parent / "lifeline-collector"
ADMIN_TOKEN = "admin-token-for-the-system-tests"


def write_config(
    directory: Path,
    port: int,
    dsn: str,
    *,
    hook: str,
    alertmanagers: list[str] | None = None,
    silent_after: str = "2s",
) -> Path:
    directory.mkdir()
    (directory / "admin.token").write_text(ADMIN_TOKEN + "\n")
    path = directory / "collector.toml"
    text = (
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        # path: where this collector keeps its own files (the heartbeat secret) beside the database
        f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\npath = "{directory / "lifeline.db"}"\n'
        '[heartbeat]\nlisten = "127.0.0.1:0"\n'
        f'[alerting]\nsilent_after = "{silent_after}"\nevaluate_interval = "200ms"\nresolve_hold = "1s"\n'
        f'[auth]\nread_access = "open"\n[api]\nadmin_token_file = "{directory / "admin.token"}"\n'
        f'[[notifiers]]\nkind = "webhook"\nname = "pager"\nurl = "{hook}"\n'
    )
    if alertmanagers:
        text += f'[[notifiers]]\nkind = "alertmanager"\nname = "am"\nurl = {json.dumps(alertmanagers)}\n'
    path.write_text(text)
    return path


@dataclass
class Collector:
    config: Path
    base: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [BIN, "serve", "--config", self.config, "--log-level", "info"], stdout=out, stderr=out
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process is not None
            assert self.process.poll() is None, f"{what}: the collector ended\n{self.text()}"
            assert time.monotonic() < deadline, f"{what}\n{self.text()}"
            time.sleep(0.05)

    def up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def leads(self, epoch: int | None = None) -> bool:
        mark = "evaluating alerts and notifying"
        return (f"{mark} (epoch {epoch})" if epoch is not None else mark) in self.text()

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def collectors(tmp_path: Path, dsn: str, count: int, **config: object) -> Iterator[list[Collector]]:
    """``count`` collectors over ``dsn``; the first one started leads (it is up before the others
    start). Each is stopped afterwards."""
    group: list[Collector] = []
    for index in range(count):
        port = free_port()
        directory = tmp_path / f"collector-{index}"
        path = write_config(directory, port, dsn, **config)  # type: ignore[arg-type]
        group.append(Collector(path, f"http://127.0.0.1:{port}", tmp_path / f"collector-{index}.log"))
    try:
        for index, member in enumerate(group):
            member.start()
            member.wait(member.up, f"collector {index} did not start")
            if index == 0:
                member.wait(member.leads, "the first collector did not lead")
        yield group
    finally:
        for member in group:
            member.stop()


def add_agent(config: Path, agent: str, site: str = "east") -> str:
    """Register ``agent`` (through the CLI, as an operator does) and return its token."""
    return subprocess.run(
        [BIN, "agents", "add", agent, "--site", site, "--position", agent.rsplit("-", 1)[-1],
         "--config", config],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def report(base: str, token: str, agent: str, seq: int, *, boot: str = "boot-1") -> httpx.Response:
    """One batch of a healthy CAD round, stamped now."""
    now_ms = int(time.time() * 1000)
    body = envelope(agent, (seq, cad_round(now_ms, True, 0)), sent_ms=now_ms, boot=boot)
    return httpx.post(
        f"{base}/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def count_batches(dsn: str, agent: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM batches WHERE agent = %s", (agent,)).fetchone()
    return int(row[0]) if row else 0
