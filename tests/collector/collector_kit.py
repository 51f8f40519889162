"""Helpers of the collector tests: configs, batches, a recording HTTP receiver (imported by tests)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from lifeline_collector.config import CollectorConfig, parse
from lifeline_collector.ingest.fast import prepare_fast
from lifeline_collector.ingest.pending import Pending
from lifeline_collector.ingest.strict import prepare
from lifeline_collector.remote_write.config import RemoteWriteConfig
from lifeline_collector.remote_write.durable import DurableRemoteWriter
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow, unpack_samples
from lifeline_wire import Batch, Envelope, Sample, decode_envelope, encode
from lifeline_wire.schema import NON_FINITE

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
        # Any free UDP port: tests (and engineers) running side by side must not share 8480.
        "heartbeat": {"listen": "127.0.0.1:0"},
        # These tests read the API without logging in; tests/collector/board checks the default
        # (reads need a viewer or the API token).
        "auth": {"read_access": "open"},
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


def durable_config(url: str, cursor: Path, per_send: int = 4) -> RemoteWriteConfig:
    """A durable remote-write config with short timers, for the tests that replay the store."""
    return RemoteWriteConfig(
        url=url,
        timeout=2.0,
        batch_wait=0.02,
        min_backoff=0.01,
        max_backoff=0.05,
        max_samples_per_send=per_send,
        cursor_file=str(cursor),
    )


def replay(writer: DurableRemoteWriter, drain_timeout: float = 10.0) -> None:
    """Start a durable remote-writer and run it until what the store holds is sent (or the timeout)."""

    async def main() -> None:
        writer.start()
        await writer.drain(drain_timeout)

    asyncio.run(main())


def _spelled(points: Sequence[tuple[int, float | str]] | None) -> list[tuple[int, str]] | None:
    """Points with every value spelled one way (the fast path keeps the wire's "NaN")."""
    if points is None:
        return None
    return [(ts, repr(NON_FINITE[v] if isinstance(v, str) else float(v))) for ts, v in points]


def fast_agrees_with_strict(agent: AgentRow, sent: bytes) -> Pending:
    """Decode a request the fast way and the strict way, check that they agree — each series'
    newest value and zero-streak points, each batch row and its stored samples — and return the
    fast one."""
    fast = prepare_fast(agent, sent)
    assert fast is not None
    strict = prepare(agent, decode_envelope(sent))
    assert fast.candidates.keys() == strict.candidates.keys()
    for key, candidate in fast.candidates.items():
        other = strict.candidates[key]
        assert (candidate.ts_ms, candidate.labels, _spelled(candidate.points)) == (
            other.ts_ms,
            other.labels,
            _spelled(other.points),
        )
        assert repr(candidate.value) == repr(other.value)
    for (i, a), (j, b) in zip(fast.batches, strict.batches, strict=True):
        assert (i, a.boot_id, a.seq, a.sample_count, a.min_ts, a.max_ts, a.events, a.codec) == (
            j,
            b.boot_id,
            b.seq,
            b.sample_count,
            b.min_ts,
            b.max_ts,
            b.events,
            b.codec,
        )
        assert unpack_samples(a.codec, a.blob) == unpack_samples(b.codec, b.blob)
    return fast
