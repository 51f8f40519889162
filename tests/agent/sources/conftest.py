"""Shared helpers for the source tests: recorded fixtures and throw-away network namespaces."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lifeline_agent.sources.wireguard import uapi_socket

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


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
                with contextlib.suppress(TimeoutError):
                    conn.recv(1)  # like wireguard-go: wait for the next operation or the close

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


@pytest.fixture
def wireguard_go() -> Iterator[Callable[[str, str], None]]:
    """Starts ``wireguard-go -f IF`` inside a namespace; stops each by PID and removes its socket."""
    if shutil.which("wireguard-go") is None or shutil.which("wg") is None:
        pytest.skip("needs wireguard-go and wireguard-tools")
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}

    def start(ns: str, interface: str) -> None:
        # `ip netns exec` execs wireguard-go, so this PID is wireguard-go itself.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "wireguard-go", "-f", interface],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append((proc, interface))
        deadline = time.monotonic() + 10
        while not os.path.exists(uapi_socket(interface)):
            assert proc.poll() is None, f"wireguard-go exited with {proc.returncode}"
            assert time.monotonic() < deadline, "wireguard-go never created its control socket"
            time.sleep(0.02)

    yield start
    for proc, interface in started:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        with_socket = uapi_socket(interface)
        if os.path.exists(with_socket):
            os.unlink(with_socket)


class DnsServer:
    """A real UDP DNS server on loopback answering A queries from a table (compressed names)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = "{}:{}".format(*self._sock.getsockname())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            qid = struct.unpack("!H", data[:2])[0]
            labels, offset = [], 12
            while data[offset]:
                labels.append(data[offset + 1 : offset + 1 + data[offset]].decode())
                offset += 1 + data[offset]
            question = data[12 : offset + 5]
            name = ".".join(labels)
            self.queries.append(name)
            found = self.answers.get(name)
            flags = 0x8180 if found is not None else 0x8183  # QR RD RA, NOERROR / NXDOMAIN
            records = b"".join(
                b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(a) for a in found or []
            )
            header = struct.pack("!HHHHHH", qid, flags, 1, len(found or []), 0, 0)
            self._sock.sendto(header + question + records, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def dns_server() -> Iterator[Callable[[dict[str, list[str]]], DnsServer]]:
    servers: list[DnsServer] = []

    def start(answers: dict[str, list[str]]) -> DnsServer:
        server = DnsServer(answers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
