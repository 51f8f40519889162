"""Shared helpers for the agent tests: loopback peers and throw-away network namespaces."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# Helper modules shared by the agent tests (importable as top-level modules under importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from lifeline_wire import Batch, IngestResponse, ItemResult, decode_envelope, encode

TS = 1_800_000_000_000

# Runs one probe round inside a fresh network namespace and prints the result as JSON.
_IN_NETNS = """
import asyncio, dataclasses, json, sys
from lifeline_agent.config import Target
from lifeline_agent.probes.icmp import open_socket
from lifeline_agent.recorder import Recorder
from lifeline_agent.probes.runner import ProbeRunner
target = Target(**json.loads(sys.argv[1]))
sock, raw = open_socket()
sock.close()
result = asyncio.run(ProbeRunner(Recorder()).run_once(target))
print(json.dumps({"raw": raw, **dataclasses.asdict(result)}))
"""


def _probe_in_netns(target: dict[str, Any], setup: list[str], ping_group_range: str) -> dict[str, Any]:
    """Probe once in a new network namespace (it vanishes with the process) after ``setup``."""
    script = " && ".join(
        [
            "ip link set lo up",
            f"sysctl -q -w net.ipv4.ping_group_range='{ping_group_range}'",
            *setup,
            'exec "$0" -c "$1" "$2"',
        ]
    )
    proc = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, _IN_NETNS, json.dumps(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def tcp_listener() -> Iterator[tuple[str, int]]:
    """A real listening TCP socket on loopback; yields (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield "127.0.0.1", server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


NetnsProbe = Callable[[dict[str, Any], list[str], str], dict[str, Any]]


@pytest.fixture
def netns_probe() -> NetnsProbe:
    """``probe(target_fields, setup_commands, ping_group_range)`` in a throw-away namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip")
    return _probe_in_netns


@pytest.fixture
def icmp_socket_ok() -> None:
    """Skip unless this process may open an ICMP datagram or raw socket."""
    from lifeline_agent.probes.icmp import open_socket

    try:
        sock, _raw = open_socket()
    except PermissionError:
        pytest.skip("neither ICMP datagram nor raw sockets allowed here")
    sock.close()


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# A rule sees the decoded envelope's batch ids and returns a Reply, or None for "ingest normally".
Rule = Callable[[list[tuple[str, int]]], Reply | None]


class FakeCollector:
    """Decodes every envelope with the real wire contract and answers per item, idempotently."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, int]] = []  # each accepted batch once, in arrival order
        self.batches: list[Batch] = []  # the accepted batches themselves
        self.requests: list[tuple[float, list[tuple[str, int]], str]] = []
        self.script: list[Rule] = []  # consumed one per request; then normal ingest
        self.reject: dict[tuple[str, int], str] = {}
        self.lock = threading.Lock()
        self.Reply = Reply
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                reply = collector.handle(self.path, self.headers.get("Authorization", ""), body)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, path: str, auth: str, body: bytes) -> Reply:
        assert path == "/api/v1/ingest"
        envelope = decode_envelope(body)
        ids = [(b.boot_id, b.seq) for b in envelope.batches]
        with self.lock:
            self.requests.append((time.monotonic(), ids, auth))
            rule = self.script.pop(0) if self.script else None
            reply = rule(ids) if rule else None
            if reply is not None:
                return reply
            results = []
            for key in ids:
                if key in self.reject:
                    results.append(ItemResult(key[0], key[1], "rejected", self.reject[key]))
                elif key in self.stored:
                    results.append(ItemResult(key[0], key[1], "duplicate"))
                else:
                    self.stored.append(key)
                    self.batches.append(next(b for b in envelope.batches if (b.boot_id, b.seq) == key))
                    results.append(ItemResult(key[0], key[1], "accepted"))
            return Reply(200, encode(IngestResponse(results=results, server_ms=TS)))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_collector() -> Iterator[FakeCollector]:
    """A real HTTP collector on loopback speaking the wire contract (see FakeCollector)."""
    fake = FakeCollector()
    yield fake
    fake.close()


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """A factory of uniquely named network namespaces, all deleted at the end of the test."""
    _need_root()
    created: list[str] = []

    def make() -> str:
        name = f"llsrc-{os.getpid()}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in created:
        subprocess.run(["ip", "netns", "del", name], check=False)
