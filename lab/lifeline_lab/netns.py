"""Sockets inside a lab namespace, from a process that stays in the root namespace.

A socket belongs to the network namespace it was created in, whatever thread uses it later. So a
short-lived helper thread enters the namespace (``setns(2)`` changes only the calling thread),
creates the socket and ends; the caller binds, listens or connects with it as usual. This lets a
test own a webhook receiver that the collector in ``vpnhub`` and Alertmanager in ``laptop`` both
reach on their own loopback, and lets it poll a service's HTTP endpoint in any namespace without
starting a process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import threading
from typing import Any

from lifeline_lab.errors import LabError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(ns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new IPv4 socket in namespace ``ns`` (a full namespace name; "" is the root namespace)."""
    if not ns:
        return socket.socket(socket.AF_INET, kind)
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_create() -> None:
        try:
            with open(os.path.join(NETNS_DIR, ns), "rb") as handle:
                if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({ns}): {os.strerror(code)}")
            made.append(socket.socket(socket.AF_INET, kind))
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=enter_and_create, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if failed:
        exc = failed[0]
        if isinstance(exc, FileNotFoundError):
            raise LabError(f"no network namespace {ns!r}") from None
        raise LabError(f"cannot open a socket in {ns}: {exc}") from exc
    return made[0]


def listener_in(ns: str, host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket_in(ns)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def http_get(
    ns: str, host: str, port: int, path: str, timeout: float = 2.0, *, token: str = ""
) -> tuple[int, bytes]:
    """``(status, body)`` of a plain HTTP/1.0 GET made from inside ``ns`` (with ``token`` as its
    bearer credential when given); (0, b"") when unreachable."""
    try:
        sock = socket_in(ns)
    except LabError:
        return 0, b""
    with contextlib.closing(sock):
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            return 0, b""
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, b""
    return status, body


def http_json(ns: str, host: str, port: int, path: str, timeout: float = 2.0, *, token: str = "") -> Any:
    """The JSON body of a GET from inside ``ns``; None when unreachable, refused or not JSON."""
    status, body = http_get(ns, host, port, path, timeout, token=token)
    if status != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
