"""Real peers for the remote-write tests: a scripted loopback receiver and a Prometheus process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from lifeline_collector.remote_write import prompb

PROMETHEUS = "/usr/bin/prometheus"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def series(self) -> list[prompb.Series]:
        return prompb.decode(self.body)

    @property
    def samples(self) -> list[tuple[prompb.Labels, float, int]]:
        return [(s.labels, value, ts) for s in self.series for value, ts in s.samples]


# Decides each answer from the request: (status, extra headers, body text).
Responder = Callable[[Received], tuple[int, dict[str, str], str]]


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    responder: Responder = lambda _request: (204, {}, "")


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = Received(dict(self.headers.items()), self.rfile.read(length))
        self.receiver.requests.append(request)
        status, headers, text = self.receiver.responder(request)
        payload = text.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on loopback that records every request and answers as scripted."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/api/v1/write")
    server.RequestHandlerClass = type("Handler", (_Handler,), {"receiver": state})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def unused_url() -> str:
    """A remote-write URL on a loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/api/v1/write"


@dataclass
class Prometheus:
    base: str

    @property
    def write_url(self) -> str:
        return f"{self.base}/api/v1/write"

    def query(self, path: str, **params: str | float) -> list[dict[str, object]]:
        response = httpx.get(f"{self.base}{path}", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The Debian Prometheus with the remote-write receiver and a 30 m out-of-order window."""
    if shutil.which(PROMETHEUS) is None:
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\n",
        encoding="utf-8",
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-remote-write-receiver",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, log_path)
        yield Prometheus(base)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"prometheus not ready within 30 s: {log_path.read_text(errors='replace')[-2000:]}")
