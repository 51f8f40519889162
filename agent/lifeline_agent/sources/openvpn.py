"""OpenVPN state from its management interface or its ``--status`` file.

The management interface (``management 127.0.0.1 7505`` or a UNIX socket) answers ``state`` with
``time,STATE,reason,local_ip,remote_ip,remote_port,…`` lines and ``END``, and ``status`` with the
statistics block; it serves one client at a time and is often held by a GUI, so the status file
(v1, or the CSV v2 / tab-separated v3 server formats) is the fallback. The status file says nothing
about the connection state: only its freshness and byte counters.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lifeline_agent.errors import SourceParseError, SourceReadError, SourceUnavailable

STATES = frozenset(
    {
        "CONNECTING",
        "WAIT",
        "AUTH",
        "GET_CONFIG",
        "ASSIGN_IP",
        "ADD_ROUTES",
        "CONNECTED",
        "RECONNECTING",
        "EXITING",
        "RESOLVE",
        "TCP_CONNECT",
        "AUTH_PENDING",
    }
)


@dataclass(frozen=True, slots=True)
class OpenVpnState:
    state: str  # one of STATES ("UNKNOWN" if OpenVPN said something new)
    reason: str = ""  # SUCCESS, ping-restart, …
    since: float | None = None  # Unix time the state was entered
    remote: str = ""  # ip:port of the server

    @property
    def connected(self) -> bool:
        return self.state == "CONNECTED"


@dataclass(frozen=True, slots=True)
class OpenVpnStatus:
    rx_bytes: int | None  # transport (TCP/UDP) bytes
    tx_bytes: int | None
    clients: int | None = None  # server formats only
    version: int = 1


def parse_state_line(line: str) -> OpenVpnState:
    """One line of ``state`` output, or a ``>STATE:`` real-time notification."""
    body = line.strip().removeprefix(">STATE:")
    fields = body.split(",")
    if len(fields) < 2:
        raise SourceParseError("openvpn state", f"expected time,STATE,…, got {line.strip()[:80]!r}")
    try:
        since = float(fields[0])
    except ValueError as exc:
        raise SourceParseError("openvpn state", f"time is not a number in {line.strip()[:80]!r}") from exc
    state = fields[1] if fields[1] in STATES else "UNKNOWN"
    remote = ""
    if len(fields) > 5 and fields[4]:
        remote = f"{fields[4]}:{fields[5]}" if fields[5] else fields[4]
    return OpenVpnState(state, fields[2] if len(fields) > 2 else "", since, remote)


def parse_state_reply(lines: Iterable[str]) -> OpenVpnState:
    """The ``state`` command's reply: history lines, newest last, then ``END``."""
    last: OpenVpnState | None = None
    for line in lines:
        text = line.strip()
        if not text or text == "END" or (text.startswith(">") and not text.startswith(">STATE:")):
            continue
        if text.startswith("ERROR:"):
            raise SourceReadError(f"openvpn management: {text}")
        last = parse_state_line(text)
    if last is None:
        raise SourceParseError("openvpn state", "empty reply")
    return last


def _int(where: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise SourceParseError(where, f"not an integer: {value!r}") from exc


def parse_status(text: str) -> OpenVpnStatus:
    """A status file or ``status`` reply in any format: client statistics, server v1, v2 (CSV), v3 (tabs)."""
    lines = [line.rstrip("\r") for line in text.splitlines() if line.strip()]
    if not lines:
        raise SourceParseError("openvpn status", "empty")
    first = lines[0]
    if first.startswith("TITLE"):
        sep = "\t" if first.startswith("TITLE\t") else ","
        return _parse_server_csv(lines, sep)
    if first == "OpenVPN STATISTICS":
        values = {}
        for number, line in enumerate(lines[1:], 2):
            if line == "END":
                break
            key, comma, value = line.rpartition(",")
            if comma:
                values[key] = (number, value)
        if "TCP/UDP read bytes" not in values or "TCP/UDP write bytes" not in values:
            raise SourceParseError("openvpn status", "statistics without TCP/UDP read/write bytes")
        rx_line, rx = values["TCP/UDP read bytes"]
        tx_line, tx = values["TCP/UDP write bytes"]
        return OpenVpnStatus(_int(f"status line {rx_line}", rx), _int(f"status line {tx_line}", tx))
    if first == "OpenVPN CLIENT LIST":
        return _parse_server_v1(lines)
    raise SourceParseError("openvpn status line 1", f"unknown format {first[:40]!r}")


def _parse_server_v1(lines: list[str]) -> OpenVpnStatus:
    rx = tx = clients = 0
    header: list[str] | None = None
    for number, line in enumerate(lines[1:], 2):
        if line in ("ROUTING TABLE", "GLOBAL STATS", "END"):
            break
        fields = line.split(",")
        if fields[0] == "Common Name":
            header = fields
        elif header is not None and fields[0] != "Updated":
            row = dict(zip(header, fields, strict=False))
            rx += _int(f"status line {number}", row.get("Bytes Received", ""))
            tx += _int(f"status line {number}", row.get("Bytes Sent", ""))
            clients += 1
    if header is None:
        raise SourceParseError("openvpn status", "CLIENT LIST without its header line")
    return OpenVpnStatus(rx, tx, clients, 1)


def _parse_server_csv(lines: list[str], sep: str) -> OpenVpnStatus:
    rx = tx = clients = 0
    header: list[str] | None = None
    for number, line in enumerate(lines, 1):
        fields = line.split(sep)
        if fields[0] == "HEADER" and len(fields) > 1 and fields[1] == "CLIENT_LIST":
            header = fields[1:]
        elif fields[0] == "CLIENT_LIST":
            if header is None:
                raise SourceParseError(f"status line {number}", "CLIENT_LIST before its HEADER")
            row = dict(zip(header, fields, strict=False))
            rx += _int(f"status line {number}", row.get("Bytes Received", ""))
            tx += _int(f"status line {number}", row.get("Bytes Sent", ""))
            clients += 1
        elif fields[0] == "END":
            break
    return OpenVpnStatus(rx, tx, clients, 3 if sep == "\t" else 2)


@dataclass(frozen=True, slots=True)
class OpenVpnReport:
    state: OpenVpnState | None
    status: OpenVpnStatus | None
    source: str  # management | status_file


def read_status_file(path: str, max_age: float = 120.0) -> OpenVpnReport:
    """The status file, if OpenVPN rewrote it recently; a stale file means OpenVPN is gone."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            age = time.time() - os.fstat(fh.fileno()).st_mtime
            text = fh.read()
    except FileNotFoundError as exc:
        raise SourceUnavailable(f"{path} missing") from exc
    except PermissionError as exc:
        raise SourceUnavailable(f"no permission to read {path}") from exc
    except OSError as exc:
        raise SourceReadError(f"{path}: {exc.strerror}") from exc
    if age > max_age:
        raise SourceReadError(f"{path} not rewritten for {age:.0f}s (OpenVPN not running?)")
    return OpenVpnReport(None, parse_status(text), "status_file")


class Management:
    """A short session on the management interface: ``state``, ``status``, then ``quit``."""

    def __init__(self, address: str, password: str = "", timeout: float = 1.0) -> None:
        self.address = address  # "host:port" or a UNIX socket path
        self.password = password
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Management({self.address!r})"  # the password is never shown

    def _connect(self) -> socket.socket:
        try:
            if self.address.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.address)
                return sock
            host, _, port = self.address.rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SourceUnavailable(f"management interface {self.address} not listening") from exc
        except PermissionError as exc:
            raise SourceUnavailable(f"no permission to open {self.address}") from exc
        except OSError as exc:
            raise SourceReadError(f"management interface {self.address}: {exc}") from exc

    def read(self) -> OpenVpnReport:
        sock = self._connect()
        try:
            reader = _Lines(sock)
            greeting = reader.until(lambda line: line.startswith((">INFO:", "ENTER PASSWORD:")))
            if greeting and greeting[-1].startswith("ENTER PASSWORD:"):
                if not self.password:
                    raise SourceUnavailable(f"management interface {self.address} needs a password")
                sock.sendall(self.password.encode() + b"\n")
                reader.until(lambda line: line.startswith((">INFO:", "SUCCESS:", "ERROR:")))
            sock.sendall(b"state\n")
            state = parse_state_reply(reader.until(lambda line: line == "END" or line.startswith("ERROR:")))
            sock.sendall(b"status\n")
            reply = reader.until(lambda line: line == "END")
            # Real-time notifications (">BYTECOUNT:", ">LOG:" …) may interleave with the reply.
            status = parse_status("\n".join(line for line in reply if not line.startswith(">")))
            sock.sendall(b"quit\n")
            return OpenVpnReport(state, status, "management")
        except TimeoutError as exc:
            raise SourceReadError(
                f"management interface {self.address}: no answer in {self.timeout:g}s"
            ) from exc
        except OSError as exc:
            raise SourceReadError(f"management interface {self.address}: {exc}") from exc
        finally:
            sock.close()


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def until(self, last: Callable[[str], bool]) -> list[str]:
        """Lines up to and including the first for which ``last(line)`` is true. Notifications are kept."""
        out: list[str] = []
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").rstrip("\r")
                out.append(line)
                if last(line):
                    return out
            if self.buffer.startswith(b"ENTER PASSWORD:"):  # the prompt has no newline
                self.buffer = b""
                out.append("ENTER PASSWORD:")
                if last("ENTER PASSWORD:"):
                    return out
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SourceReadError("management interface closed the connection")
            self.buffer += chunk
