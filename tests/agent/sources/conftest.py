"""Shared helpers for the source tests: recorded fixtures and throw-away network namespaces."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


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


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


class UapiServer:
    """A real UNIX control socket answering every ``get=1`` with a recorded reply, in 7-byte pieces."""

    def __init__(self, path: str, reply: bytes) -> None:
        self.path = path
        self.reply = reply
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen()
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while not data.endswith(b"\n\n"):
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                for i in range(0, len(self.reply), 7):
                    conn.sendall(self.reply[i : i + 7])
                try:
                    conn.recv(1)  # like wireguard-go: wait for the next operation or the close
                except TimeoutError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def uapi_server() -> Iterator[Callable[[str, bytes], UapiServer]]:
    servers: list[UapiServer] = []

    def start(path: str, reply: bytes) -> UapiServer:
        server = UapiServer(path, reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
