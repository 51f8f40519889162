"""Bulk traffic for bufferbloat: a TCP sink and a sender. Standard library only.

``python -m lifeline_lab.load sink --bind 192.0.2.1 --port 9000`` discards whatever arrives and
prints one JSON line per finished upload (bytes received, seconds, kbit/s);
``python -m lifeline_lab.load send --to 192.0.2.1:9000 --seconds 20`` uploads as fast as TCP
allows for that long (``--seconds 0``: until killed), then prints one JSON line with the bytes
sent. The bytes are zeros: the lab never carries real payloads.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

CHUNK = 64 * 1024


def _drain(conn: socket.socket) -> None:
    """Discard one upload; then print what arrived and how fast (the rate the path really gave)."""
    received = 0
    first = 0.0
    with conn:
        while data := conn.recv(CHUNK):
            if not received:
                first = time.monotonic()
            received += len(data)
    elapsed = max(time.monotonic() - first, 1e-6)
    report = {
        "received": received,
        "seconds": round(elapsed, 3),
        "kbit_s": round(received * 8 / 1000 / elapsed, 1),
    }
    print(json.dumps(report), flush=True)


def sink(bind: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((bind, port))
        server.listen(16)
        while True:
            conn, _peer = server.accept()
            threading.Thread(target=_drain, args=(conn,), daemon=True).start()


def send(host: str, port: int, seconds: float) -> int:
    payload = bytes(CHUNK)
    sent = 0
    end = time.monotonic() + seconds if seconds > 0 else float("inf")
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.settimeout(1.0)
        while time.monotonic() < end:
            try:
                sent += conn.send(payload)
            except TimeoutError:
                continue
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifeline_lab.load", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=9000)
    t = sub.add_parser("send")
    t.add_argument("--to", required=True, help="host:port")
    t.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.mode == "sink":
        sink(args.bind, args.port)
        return 0
    host, _, port = args.to.rpartition(":")
    t0 = time.monotonic()
    sent = send(host, int(port), args.seconds)
    elapsed = time.monotonic() - t0
    print(
        json.dumps(
            {"bytes": sent, "seconds": round(elapsed, 3), "kbit_s": round(sent * 8 / 1000 / elapsed, 1)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
