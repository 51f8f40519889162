"""A netlink socket kept open between requests, shared by the polled raw-netlink readers.

``rtnetlink.Netlink`` (rtnetlink: links, routes) and ``cad_sessions.DiagBackend`` (inet_diag) are
read every few seconds, so each keeps one socket instead of opening one per read. Both need the
same care: open on first use, re-open after any error so a reply that timed out is never taken for
the answer to a later request, and one lock so a request and its replies are one step whichever
thread (reads, the provider check) calls in.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from lifeline_agent.errors import SourceReadError, SourceUnavailable
from lifeline_agent.netlink.attributes import (
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    error_code,
    split_messages,
)

TIMEOUT = 2.0  # seconds for one datagram of a reply
RECV = 1 << 16  # rtnetlink and inet_diag dump datagrams stay under 32 KiB


class KeptNetlinkSocket:
    """One netlink socket of ``protocol``, opened on first use and dropped after any error.

    ``label`` names the socket in errors ("rtnetlink in netns lab-laptop", "inet_diag"). Subclasses
    call ``_exchange`` with ``_lock`` held; ``close()`` releases the socket (the next request opens
    a fresh one).
    """

    def __init__(self, protocol: int, label: str) -> None:
        self._protocol = protocol
        self._label = label
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._seq = 0

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open(self) -> socket.socket:
        """A new, unbound socket (a subclass may open it elsewhere, e.g. in a network namespace)."""
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self._protocol)

    def _socket(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        try:
            sock = self._open()
        except OSError as exc:
            raise SourceUnavailable(f"{self._label}: {exc.strerror or exc}") from exc
        try:
            sock.settimeout(TIMEOUT)
            sock.bind((0, 0))
        except OSError as exc:
            sock.close()
            raise SourceUnavailable(f"{self._label}: {exc.strerror or exc}") from exc
        self._sock = sock
        return sock

    def _exchange(
        self, request: Callable[[int], bytes], *, dump: bool, what: str
    ) -> tuple[list[memoryview], int, bool]:
        """Send ``request(seq)``; its reply payloads, the kernel's errno and whether a dump was interrupted.

        Call with ``_lock`` held. Any error drops the socket and raises ``SourceReadError`` naming
        ``what``.
        """
        sock = self._socket()
        self._seq = self._seq % 0x7FFFFFFF + 1
        try:
            sock.send(request(self._seq))
            return read_replies(sock, self._seq, dump=dump)
        except (OSError, ValueError) as exc:  # ValueError: a truncated message
            self._drop()
            raise SourceReadError(f"{what}: {exc}") from exc


def read_replies(sock: socket.socket, seq: int, *, dump: bool) -> tuple[list[memoryview], int, bool]:
    """The payloads answering request ``seq`` (a dump: until NLMSG_DONE), the errno (0: none), and
    whether the kernel flagged the dump as interrupted (the table changed while it was walked)."""
    out: list[memoryview] = []
    while True:
        for kind, flags, got, payload in split_messages(sock.recv(RECV)):
            if got != seq or kind == NLMSG_NOOP:
                continue  # an answer to an abandoned request, or padding
            if kind == NLMSG_ERROR:
                return out, error_code(payload), False
            if kind == NLMSG_DONE:
                return out, 0, bool(flags & NLM_F_DUMP_INTR)
            out.append(payload)
            if not dump:
                return out, 0, False
