"""WireGuard state without ever keeping a key.

Two ways in: the kernel module over generic netlink (pyroute2 ``WireGuard``, needs CAP_NET_ADMIN)
and the cross-platform userspace API of wireguard-go and friends, a UNIX socket
``/var/run/wireguard/<if>.sock`` that answers ``get=1`` with ``key=value`` lines ending ``errno=0``
and a blank line. Both replies contain the interface's private key (and peers' preshared keys):
the uapi parser drops those lines without storing them, and the netlink adapter copies only the
attributes it needs out of pyroute2's objects, so no key reaches a fact, sample, event, repr or log.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifeline_agent.errors import SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.netlink.attributes import as_int, attr, attrs

UAPI_DIR = "/var/run/wireguard"

# pyroute2 logs every decoded netlink message at DEBUG, the WireGuard private key included: keep its
# loggers at INFO or above whatever the agent's log level is (an explicit setting is respected).
_PYROUTE2_LOG = logging.getLogger("pyroute2")
if _PYROUTE2_LOG.level == logging.NOTSET:
    _PYROUTE2_LOG.setLevel(logging.INFO)
SECRET_KEYS = frozenset({"private_key", "preshared_key"})
_PEER_INTEGERS = frozenset(
    {
        "last_handshake_time_sec",
        "last_handshake_time_nsec",
        "rx_bytes",
        "tx_bytes",
        "persistent_keepalive_interval",
    }
)


@dataclass(frozen=True, slots=True)
class WgPeer:
    endpoint: str = ""
    last_handshake: float | None = None  # Unix time; None = never
    rx_bytes: int = 0
    tx_bytes: int = 0
    keepalive: int = 0  # persistent keepalive interval, seconds (0 = off)


@dataclass(frozen=True, slots=True)
class WgDevice:
    listen_port: int | None
    peers: tuple[WgPeer, ...]

    @property
    def latest(self) -> WgPeer | None:
        """The peer with the most recent handshake (the one carrying the tunnel)."""
        if not self.peers:
            return None
        return max(self.peers, key=lambda p: p.last_handshake or 0.0)

    @property
    def rx_bytes(self) -> int:
        return sum(p.rx_bytes for p in self.peers)

    @property
    def tx_bytes(self) -> int:
        return sum(p.tx_bytes for p in self.peers)


# --- userspace API (wireguard-go) ----------------------------------------------------------------


class UapiParser:
    """Line-by-line parser for a ``get=1`` reply; secret lines are skipped before anything is kept."""

    def __init__(self) -> None:
        self.listen_port: int | None = None
        self.errno: int | None = None
        self.done = False
        self._peers: list[dict[str, Any]] = []
        self._line = 0

    def feed(self, line: str) -> None:
        self._line += 1
        if self.done:
            return
        if not line:
            if self.errno is not None:
                self.done = True
            return
        key, sep, value = line.partition("=")
        if key in SECRET_KEYS:
            return  # never stored, never echoed in an error message
        if not sep:
            raise SourceParseError(f"uapi line {self._line}", f"expected key=value, got {key[:32]!r}")
        if key == "public_key":
            self._peers.append({})
        elif key == "errno":
            self.errno = self._int(key, value)
        elif key == "listen_port":
            self.listen_port = self._int(key, value)
        elif self._peers and key in _PEER_INTEGERS:
            self._peers[-1][key] = self._int(key, value)
        elif self._peers and key == "endpoint":
            self._peers[-1]["endpoint"] = value
        # other keys (allowed_ip, fwmark, protocol_version, …) carry nothing the agent needs

    def _int(self, key: str, value: str) -> int:
        try:
            return int(value)
        except ValueError as exc:
            raise SourceParseError(f"uapi line {self._line}", f"{key} is not an integer: {value!r}") from exc

    def result(self) -> WgDevice:
        if self.errno is None:
            raise SourceParseError("uapi reply", "ended without errno= (truncated)")
        if self.errno != 0:
            raise SourceReadError(f"uapi get failed: errno={self.errno} ({os.strerror(self.errno)})")
        peers = []
        for p in self._peers:
            sec, nsec = p.get("last_handshake_time_sec", 0), p.get("last_handshake_time_nsec", 0)
            peers.append(
                WgPeer(
                    endpoint=p.get("endpoint", ""),
                    last_handshake=sec + nsec / 1e9 if (sec or nsec) else None,
                    rx_bytes=p.get("rx_bytes", 0),
                    tx_bytes=p.get("tx_bytes", 0),
                    keepalive=p.get("persistent_keepalive_interval", 0),
                )
            )
        return WgDevice(self.listen_port, tuple(peers))


def parse_uapi(text: str) -> WgDevice:
    parser = UapiParser()
    for line in text.split("\n"):
        parser.feed(line)
        if parser.done:
            break
    return parser.result()


def uapi_socket(interface: str, directory: str = UAPI_DIR) -> str:
    return os.path.join(directory, f"{interface}.sock")


def uapi_get(path: str, timeout: float = 1.0) -> WgDevice:
    """Ask a userspace WireGuard for its state over its control socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError as exc:
            raise SourceUnavailable(f"{path} missing (no userspace WireGuard for this interface)") from exc
        except PermissionError as exc:
            raise SourceUnavailable(f"needs root (or the socket's group) to open {path}") from exc
        except ConnectionRefusedError as exc:
            raise SourceReadError(f"{path}: nobody listening (stale socket)") from exc
        parser = UapiParser()
        pending = b""
        try:
            sock.sendall(b"get=1\n\n")
            while not parser.done:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    parser.feed(line.decode("utf-8", "replace"))
        except TimeoutError as exc:
            raise SourceReadError(f"{path}: no complete answer within {timeout:g}s") from exc
        except OSError as exc:
            raise SourceReadError(f"{path}: {exc.strerror}") from exc
        finally:
            pending = b""
        return parser.result()
    finally:
        sock.close()


# --- kernel module over generic netlink ------------------------------------------------------------

_PEER_ATTRS = (
    "WGPEER_A_ENDPOINT",
    "WGPEER_A_LAST_HANDSHAKE_TIME",
    "WGPEER_A_RX_BYTES",
    "WGPEER_A_TX_BYTES",
    "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL",
)


def parse_netlink_device(messages: list[Mapping[str, Any]]) -> WgDevice:
    """``WG_CMD_GET_DEVICE`` replies as plain dicts (a large device spans several messages)."""
    listen_port: int | None = None
    peers: list[WgPeer] = []
    for msg in messages:
        port = as_int(attr(msg, "WGDEVICE_A_LISTEN_PORT"))
        listen_port = port if port is not None else listen_port
        for group in attrs(msg, "WGDEVICE_A_PEERS"):
            for peer in group if isinstance(group, list) else [group]:
                endpoint = attr(peer, "WGPEER_A_ENDPOINT") or {}
                handshake = attr(peer, "WGPEER_A_LAST_HANDSHAKE_TIME") or {}
                addr, port = endpoint.get("addr"), endpoint.get("port")
                sec, nsec = as_int(handshake.get("tv_sec")) or 0, as_int(handshake.get("tv_nsec")) or 0
                text = ""
                if addr and port:
                    text = f"[{addr}]:{port}" if ":" in str(addr) else f"{addr}:{port}"
                peers.append(
                    WgPeer(
                        endpoint=text,
                        last_handshake=sec + nsec / 1e9 if (sec or nsec) else None,
                        rx_bytes=as_int(attr(peer, "WGPEER_A_RX_BYTES")) or 0,
                        tx_bytes=as_int(attr(peer, "WGPEER_A_TX_BYTES")) or 0,
                        keepalive=as_int(attr(peer, "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")) or 0,
                    )
                )
    return WgDevice(listen_port, tuple(peers))


def _safe_copy(msg: Any) -> dict[str, Any]:
    """Copy only non-secret attributes out of a pyroute2 wgmsg (the private key is never touched)."""
    out: dict[str, Any] = {"attrs": []}
    port = msg.get_attr("WGDEVICE_A_LISTEN_PORT")
    if port is not None:
        out["attrs"].append(["WGDEVICE_A_LISTEN_PORT", port])
    peers = []
    for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
        plain: dict[str, Any] = {"attrs": []}
        for name in _PEER_ATTRS:
            value = peer.get_attr(name)
            if value is None:
                continue
            if name == "WGPEER_A_ENDPOINT":
                value = {"addr": value.get("addr"), "port": value.get("port")}
            elif name == "WGPEER_A_LAST_HANDSHAKE_TIME":
                value = {"tv_sec": value.get("tv_sec"), "tv_nsec": value.get("tv_nsec")}
            plain["attrs"].append([name, value])
        peers.append(plain)
    out["attrs"].append(["WGDEVICE_A_PEERS", peers])
    return out


def kernel_get(interface: str) -> WgDevice:
    """The kernel module's view of ``interface`` (pyroute2 ``WireGuard``; fails against wireguard-go)."""
    try:
        from pyroute2 import WireGuard
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as exc:
        raise SourceUnavailable("pyroute2 is not installed") from exc
    try:
        wg = WireGuard()
    except (NetlinkError, OSError) as exc:
        raise SourceUnavailable(f"no WireGuard kernel module ({exc})") from exc
    try:
        return parse_netlink_device([_safe_copy(m) for m in wg.info(interface)])
    except NetlinkError as exc:
        if exc.code == errno.EPERM:
            raise SourceUnavailable("needs CAP_NET_ADMIN to read WireGuard over netlink") from exc
        raise SourceReadError(f"WireGuard netlink {interface}: {exc}") from exc
    except OSError as exc:
        raise SourceReadError(f"WireGuard netlink {interface}: {exc}") from exc
    finally:
        wg.close()
