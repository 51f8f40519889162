"""Real processes for the delivery system and lab tests: ``lifeline-collector serve`` and
``lifeline-agent run`` with their configs, and read-only views of the collector's store and the
agent's spool (plain SQLite, read the way an IT person with the sqlite3 shell would).

Imported by name: tests/system/conftest.py and tests/lab/test_delivery_paths.py put this folder on
sys.path. Every process is ended by its own PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lifeline_collector.store import labels_key, unpack_samples

BIN = Path(sys.executable).parent
AGENT_ID = "ws-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0, every: float = 0.1) -> None:
    """Poll ``check`` until true; the timeout only guards a hung test, it measures nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError, sqlite3.Error):
            if check():
                return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass
class Proc:
    """One process the test started (optionally inside a network namespace), logging to a file."""

    name: str
    argv: list[str]
    log: Path
    prefix: Sequence[str] = ()  # e.g. ("ip", "netns", "exec", "t1-laptop")
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [*self.prefix, *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


@dataclass
class Collector:
    """``lifeline-collector serve`` over a store in ``workdir``."""

    workdir: Path
    listen: str
    remote_write_url: str = ""
    prefix: Sequence[str] = ()
    proc: Proc | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = self.workdir / "collector.db"
        self.config = self.workdir / "collector.toml"
        lines = [
            "[server]",
            f'listen = "{self.listen}"',
            "[store]",
            f'path = "{self.store}"',
            "[alerting]",
            'silent_after = "15s"',
        ]
        if self.remote_write_url:
            lines += [
                "[remote_write]",
                f'url = "{self.remote_write_url}"',
                'batch_wait = "200ms"',
                'min_backoff = "100ms"',
                'max_backoff = "2s"',
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def register(self, agent_id: str = AGENT_ID) -> str:
        done = subprocess.run(
            [str(BIN / "lifeline-collector"), "agents", "add", agent_id, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def start(self, url: str | None = None) -> Collector:
        self.proc = Proc(
            "collector",
            [str(BIN / "lifeline-collector"), "serve", "--config", str(self.config)],
            self.workdir / "collector.log",
            self.prefix,
        ).start()
        if url is not None:
            wait_for(
                "the collector's /healthz", lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    # -- the store, read-only -------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=10)) as db:
            return list(db.execute(sql, params))

    def seqs(self, agent: str = AGENT_ID) -> dict[str, list[int]]:
        """Stored batch seqs per boot, in seq order (UNIQUE in the store: one row per batch)."""
        out: dict[str, list[int]] = {}
        for boot, seq in self.query(
            "SELECT boot_id, seq FROM batches WHERE agent = ? ORDER BY seq", (agent,)
        ):
            out.setdefault(str(boot), []).append(int(seq))
        return out

    def sample_counts(self, agent: str = AGENT_ID) -> dict[tuple[str, int], int]:
        rows = self.query("SELECT boot_id, seq, sample_count FROM batches WHERE agent = ?", (agent,))
        return {(str(boot), int(seq)): int(count) for boot, seq, count in rows}

    def samples(self, name: str, agent: str = AGENT_ID) -> list[tuple[str, int, float, int]]:
        """(labels, ts_ms, value, received_ms) of one metric, by time (each batch's samples are
        one blob in the store: decoded here)."""
        rows = self.query(
            "SELECT codec, samples, received_ms FROM batches WHERE agent = ? AND sample_count > 0 ORDER BY id",
            (agent,),
        )
        out = [
            (labels_key(sample.labels), sample.ts_ms, sample.number, int(received))
            for codec, blob, received in rows
            for sample in unpack_samples(int(codec), blob)
            if sample.name == name
        ]
        out.sort(key=lambda row: row[1])
        return out


def loopback_collector(workdir: Path, **options: Any) -> tuple[Collector, str, str]:
    """A collector on a free loopback port with the agent registered, not started yet: the
    collector, its URL and the agent's token (``options``: the other ``Collector`` fields)."""
    port = free_port()
    collector = Collector(workdir, f"127.0.0.1:{port}", **options)
    return collector, f"http://127.0.0.1:{port}", collector.register()


def agent_config(
    workdir: Path,
    token: str,
    endpoints: Sequence[str | dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    *,
    batch_interval: str = "1s",
    spool_max_bytes: str = "200MB",
    collector_options: dict[str, Any] | None = None,
    agent_id: str = AGENT_ID,
) -> Path:
    """An agent config in ``workdir`` (state, spool and status.json there too); TOML by hand."""
    workdir.mkdir(parents=True, exist_ok=True)

    def value(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    def table(d: dict[str, Any]) -> str:
        return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in d.items()) + " }"

    eps = [table({"url": e}) if isinstance(e, str) else table(e) for e in endpoints]
    lines = [
        "[agent]",
        f'id = "{agent_id}"',
        'site = "north"',
        'position = "12"',
        f"token = {value(token)}",
        f'state_dir = "{workdir}"',
        'log_level = "info"',
        "[schedule]",
        f'batch_interval = "{batch_interval}"',
        "[discovery]",
        "default_gateways = false",
        "vpn_interfaces = false",
        "[metrics]",
        "enabled = false",
        "[spool]",
        f'max_bytes = "{spool_max_bytes}"',
        "[providers]",
        'wifi = "off"',
        'cellular = "off"',
        'power = "off"',
        "cad_sessions = false",
        "netlink = false",
        "traceroute = false",
        "desktop_notify = false",
        "[collector]",
        f"endpoints = [{', '.join(eps)}]",
        'timeout = "2s"',
    ]
    lines += [f"{k} = {value(v)}" for k, v in (collector_options or {}).items()]
    for target in targets:
        lines.append("[[targets]]")
        lines += [f"{k} = {value(v)}" for k, v in target.items()]
    path = workdir / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cad_probe(port: int, *, interval: str, timeout: str) -> dict[str, Any]:
    """An agent target: a TCP probe of the stand-in CAD server on loopback ``port``."""
    target = {"name": "cad", "role": "cad", "kind": "tcp", "host": "127.0.0.1", "port": port}
    return {**target, "interval": interval, "timeout": timeout}


def agent_proc(config: Path, prefix: Sequence[str] = (), name: str = "agent") -> Proc:
    return Proc(
        name,
        [str(BIN / "lifeline-agent"), "run", "--config", str(config)],
        config.parent / f"{name}.log",
        prefix,
    )


def spool_batches(path: Path) -> list[tuple[str, int, int, bool]]:
    """(boot, seq, samples, priority) of every batch waiting in an agent's spool file."""
    if not path.exists():
        return []
    # Read-write on purpose: after a kill -9 the WAL must be recovered to be read.
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        rows = db.execute("SELECT boot_id, seq, priority, body FROM batches ORDER BY id").fetchall()
    return [(str(b), int(s), _sample_count(json.loads(body)), bool(p)) for b, s, p, body in rows]


def _sample_count(batch: dict[str, Any]) -> int:
    """Samples in a spooled batch, in either wire form (``samples``, or ``series`` points)."""
    return len(batch.get("samples", [])) + sum(len(entry["points"]) for entry in batch.get("series", []))


def status(workdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((workdir / "status.json").read_text())
    return data
