"""Helpers of the collector tests: configs, batches, a recording HTTP receiver (imported by tests)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from lifeline_collector.config import CollectorConfig, parse
from lifeline_collector.service import Collector
from lifeline_wire import Batch, Envelope, Sample, encode

T0 = 1_700_000_000.0  # the manual clock's start, seconds


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app's service started (notifier workers, no tick: tests drive ``tick``) and a client."""
    service: Collector = app.state.collector
    await service.start(ticker=False)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            yield client
    finally:
        await service.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> CollectorConfig:
    # Resolution at once unless a test asks for the resolve hold: tests step the clock by hand.
    data: dict[str, Any] = {
        "store": {"path": str(tmp_path / "collector.db")},
        "alerting": {"resolve_hold": "0s"},
    }
    for name, values in sections.items():
        if name == "notifiers":
            data[name] = values
        else:
            data.setdefault(name, {}).update(values)
    return parse(data, "(test)")


def probe(name: str, value: float, ts_ms: int, target: str = "cad-primary", role: str = "cad") -> Sample:
    return Sample(name=name, value=value, ts_ms=ts_ms, labels={"target": target, "role": role, "kind": "tcp"})


def cad_round(ts_ms: int, ok: bool, failures: int, target: str = "cad-primary") -> list[Sample]:
    """What an agent reports for one probe round of a CAD target."""
    return [
        probe("lifeline_probe_success", 1.0 if ok else 0.0, ts_ms, target),
        probe("lifeline_probe_consecutive_failures", float(failures), ts_ms, target),
    ]


def envelope(
    agent: str,
    *batches: tuple[int, list[Sample]],
    boot: str = "boot-1",
    sent_ms: int | None = None,
    site: str = "",
    position: str = "",
) -> bytes:
    built = [
        Batch(
            agent_id=agent,
            boot_id=boot,
            seq=seq,
            created_ms=samples[0].ts_ms if samples else 1_700_000_000_000,
            samples=samples,
        )
        for seq, samples in batches
    ]
    sent = sent_ms if sent_ms is not None else built[0].created_ms
    return encode(Envelope(version=1, batches=built, sent_ms=sent, site=site, position=position))


@dataclass
class Receiver:
    """A real HTTP server on loopback that records every POST and answers from a script."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give in order; then 200
    got: threading.Event = field(default_factory=threading.Event)

    def bodies(self) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests]


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            # A 401 echoes the credentials it got, as careless servers do: they must not reach a log.
            answer = (self.headers.get("Authorization") or "").encode() if status == 401 else b"{}"
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            state.got.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
