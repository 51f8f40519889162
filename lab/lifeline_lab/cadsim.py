"""CAD session simulator: the ground truth for "this position lost CAD". Standard library only.

Runs inside the lab's namespaces with ``ip netns exec NS python -m lifeline_lab.cadsim …``:

``server``  a CAD server (TCP). Each client sends ``HB <seq>\\n`` heartbeats; the server answers
            ``ACK <seq> <server time>\\n``. Many clients, one thread each.
``dns``     a tiny authoritative DNS server over UDP: A records from ``--record name=addr``,
            NXDOMAIN for other names, an empty answer for other types of a known name.
``client``  a CAD client holding one persistent TCP session, as a dispatcher's CAD client does:
            resolves the server name through the agency DNS, sends a heartbeat every
            ``--interval`` seconds, declares CAD **lost** when no heartbeat has been answered for
            ``--lost-after`` seconds, drops the session and reconnects with exponential backoff,
            and declares CAD **restored** at the first answer after a loss.

The client logs JSON lines (and flushes each one)::

    {"ts": 1718000000.123, "event": "connected", "server": "10.20.0.10:7000", "connect_s": 0.002}
    {"ts": …, "event": "lost", "reason": "no heartbeat answer for 5.0s", "since_ack_s": 5.0}
    {"ts": …, "event": "disconnected", "reason": "…"}
    {"ts": …, "event": "connect_failed", "reason": "timed out", "retry_in_s": 1.0}
    {"ts": …, "event": "restored", "outage_s": 17.4}

``lost`` and ``restored`` alternate, starting with ``lost``; ``connected`` is every successful TCP
connect. Only timestamps and states are logged — never payloads.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

# -- DNS ---------------------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def decode_question(packet: bytes) -> tuple[int, int, str, int, int, int]:
    """``(id, flags, qname, qtype, qclass, end offset)`` of a query's first question."""
    if len(packet) < 12:
        raise ValueError("short DNS header")
    qid, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount < 1:
        raise ValueError("no question")
    labels: list[str] = []
    pos = 12
    while True:
        if pos >= len(packet):
            raise ValueError("truncated name")
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length >= 64:
            raise ValueError("compressed or bad label in question")
        labels.append(packet[pos : pos + length].decode("ascii", "replace"))
        pos += length
    if pos + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", packet[pos : pos + 4])
    return qid, flags, ".".join(labels).lower(), qtype, qclass, pos + 4


def dns_answer(packet: bytes, records: dict[str, str], ttl: int = 30) -> bytes | None:
    """The response to one query, or None for garbage (dropped, like a real server would)."""
    try:
        qid, flags, qname, qtype, qclass, end = decode_question(packet)
    except ValueError:
        return None
    question = packet[12:end]
    rd = flags & 0x0100
    if qname not in records:
        return struct.pack("!HHHHHH", qid, 0x8400 | rd | 3, 1, 0, 0, 0) + question  # NXDOMAIN
    answers = b""
    count = 0
    if qtype in (1, 255) and qclass == 1:  # A or ANY
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(records[qname])
        count = 1
    return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, count, 0, 0) + question + answers


def build_query(name: str, qid: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", 1, 1)


def resolve(name: str, server: str, timeout: float, port: int = 53) -> str:
    """A records of ``name`` asked of ``server`` (UDP); raises OSError on failure."""
    try:
        socket.inet_aton(name)
        return name
    except OSError:
        pass
    qid = random.randrange(65536)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))  # connected, like a stub resolver: "refused" arrives as an error
        sock.send(build_query(name, qid))
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(2048)
            if len(data) < 12 or struct.unpack("!H", data[:2])[0] != qid:
                continue
            rcode = data[3] & 0x0F
            if rcode:
                raise OSError(f"DNS rcode {rcode} for {name}")
            _qid, _flags, _qname, _qtype, _qclass, pos = decode_question(data)
            ancount = struct.unpack("!H", data[6:8])[0]
            for _ in range(ancount):
                if data[pos] & 0xC0 == 0xC0:
                    pos += 2
                else:
                    while data[pos]:
                        pos += data[pos] + 1
                    pos += 1
                rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
                pos += 10
                if rtype == 1 and rdlen == 4:
                    return socket.inet_ntoa(data[pos : pos + 4])
                pos += rdlen
            raise OSError(f"no A record for {name}")


def serve_dns(bind: str, port: int, records: dict[str, str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    while True:
        data, peer = sock.recvfrom(2048)
        reply = dns_answer(data, records)
        if reply is not None:
            sock.sendto(reply, peer)


# -- CAD server --------------------------------------------------------------------------------


class _HeartbeatHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for raw in self.rfile:
            parts = raw.split()
            if len(parts) == 2 and parts[0] == b"HB":
                self.wfile.write(b"ACK %s %.3f\n" % (parts[1], time.time()))
                self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve_cad(bind: str, port: int) -> None:
    with _Server((bind, port), _HeartbeatHandler) as server:
        server.serve_forever()


# -- CAD client --------------------------------------------------------------------------------


class CadClient:
    """One persistent heartbeat session, with the loss/restore bookkeeping a CAD client has."""

    def __init__(
        self,
        server: str,
        port: int,
        *,
        dns: str,
        interval: float,
        lost_after: float,
        connect_timeout: float,
        backoff_min: float,
        backoff_max: float,
        out: Sequence[IO[str]],
    ) -> None:
        self.server = server
        self.port = port
        self.dns = dns
        self.interval = interval
        self.lost_after = lost_after
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.out = out
        self.lost = False
        self.lost_at = 0.0
        self.last_ack = time.monotonic()  # the session starts "fresh": lost if none within lost_after
        self.seq = 0
        self.stopping = False

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, sort_keys=False)
        for stream in self.out:
            stream.write(line + "\n")
            stream.flush()

    def _check_lost(self) -> None:
        since = time.monotonic() - self.last_ack
        if not self.lost and since >= self.lost_after:
            self.lost = True
            self.lost_at = time.time()
            self.log(
                "lost", reason=f"no heartbeat answer for {self.lost_after:g}s", since_ack_s=round(since, 3)
            )

    def _acked(self) -> None:
        self.last_ack = time.monotonic()
        if self.lost:
            self.lost = False
            self.log("restored", outage_s=round(time.time() - self.lost_at, 3))

    def run(self) -> None:
        backoff = self.backoff_min
        while not self.stopping:
            sock = self._connect()
            if sock is None:
                retry = min(backoff, self.backoff_max) * random.uniform(0.8, 1.0)
                self._sleep_checking(retry)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = self.backoff_min
            reason = self._session(sock)
            sock.close()
            if not self.stopping:
                self.log("disconnected", reason=reason)

    def _sleep_checking(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            self._check_lost()
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        self._check_lost()

    def _connect(self) -> socket.socket | None:
        self._check_lost()
        t0 = time.monotonic()
        try:
            address = resolve(self.server, self.dns, self.connect_timeout) if self.dns else self.server
        except OSError as exc:
            self._check_lost()
            self.log("connect_failed", reason=f"resolve {self.server}: {exc or 'timed out'}")
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(max(0.05, self.connect_timeout - (time.monotonic() - t0)))
        try:
            sock.connect((address, self.port))
        except OSError as exc:
            sock.close()
            self._check_lost()
            self.log("connect_failed", reason=str(exc) or type(exc).__name__)
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.log("connected", server=f"{address}:{self.port}", connect_s=round(time.monotonic() - t0, 4))
        return sock

    def _session(self, sock: socket.socket) -> str:
        buffer = b""
        next_beat = time.monotonic()
        session_ack = time.monotonic()  # a new session gets lost_after to answer its first beat
        while not self.stopping:
            now = time.monotonic()
            if now >= next_beat:
                self.seq += 1
                try:
                    sock.send(b"HB %d\n" % self.seq)
                except BlockingIOError:
                    pass  # send buffer full: the path is stalled; the timeout below decides
                except OSError as exc:
                    return f"send: {exc}"
                next_beat = now + self.interval
            readable, _w, _x = select.select([sock], [], [], max(0.0, min(next_beat - now, 0.1)))
            if readable:
                try:
                    data = sock.recv(4096)
                except OSError as exc:
                    return f"recv: {exc}"
                if not data:
                    return "server closed the session"
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.startswith(b"ACK "):
                        session_ack = time.monotonic()
                        self._acked()
            self._check_lost()
            if time.monotonic() - session_ack >= self.lost_after:
                return f"no heartbeat answer for {self.lost_after:g}s"
        return "stopping"


# -- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lifeline_lab.cadsim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server", help="CAD server (TCP heartbeats)")
    srv.add_argument("--bind", default="0.0.0.0")
    srv.add_argument("--port", type=int, default=7000)
    dns = sub.add_parser("dns", help="tiny DNS server")
    dns.add_argument("--bind", default="0.0.0.0")
    dns.add_argument("--port", type=int, default=53)
    dns.add_argument("--record", action="append", default=[], help="name=IPv4 (repeatable)")
    cli = sub.add_parser("client", help="CAD client holding one session")
    cli.add_argument("--server", required=True, help="name or address of the CAD server")
    cli.add_argument("--port", type=int, default=7000)
    cli.add_argument("--dns", default="", help="DNS server to resolve --server with")
    cli.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, seconds")
    cli.add_argument("--lost-after", type=float, default=5.0, help="seconds without an answer = lost")
    cli.add_argument("--connect-timeout", type=float, default=3.0)
    cli.add_argument("--backoff-min", type=float, default=0.5)
    cli.add_argument("--backoff-max", type=float, default=4.0)
    cli.add_argument("--log", default="", help="append JSON lines here as well as to stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.mode == "server":
            serve_cad(args.bind, args.port)
        elif args.mode == "dns":
            records: dict[str, str] = {}
            for item in args.record:
                name, _, addr = item.partition("=")
                socket.inet_aton(addr)
                records[name.lower().rstrip(".")] = addr
            serve_dns(args.bind, args.port, records)
        else:
            streams: list[IO[str]] = [sys.stdout]
            log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
            if log_file is not None:
                streams.append(log_file)
            client = CadClient(
                args.server,
                args.port,
                dns=args.dns,
                interval=args.interval,
                lost_after=args.lost_after,
                connect_timeout=args.connect_timeout,
                backoff_min=args.backoff_min,
                backoff_max=args.backoff_max,
                out=streams,
            )
            client.log("start", server=args.server, interval_s=args.interval, lost_after_s=args.lost_after)
            threading.current_thread().name = "cad-client"
            client.run()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
