"""Helpers of the delivery tests (imported by name: conftest.py puts this folder on sys.path).

A loopback collector that speaks the wire contract over HTTP or real TLS (certificates in
``certs/``), batches, and shippers with fast backoff.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lifeline_agent.config import AgentSection, CollectorEndpoint, CollectorSection
from lifeline_agent.delivery.shipper import Shipper
from lifeline_agent.delivery.spool import Spool
from lifeline_wire import Batch, IngestResponse, ItemResult, Sample, decode_envelope, encode
from lifeline_wire.retry import Backoff

CERTS = Path(__file__).parent / "certs"
TOKEN = "delivery-token"
TS = 1_800_000_000_000


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# Given the batch ids of a request, an Answer, or None for "ingest normally".
Rule = Callable[[list[tuple[str, int]]], Answer | None]


class LoopbackCollector:
    """A real HTTP(S) server on 127.0.0.1: decodes envelopes with the wire contract, stores each
    (boot, seq) once, answers per item; ``GET /healthz`` answers 200 unless ``healthy`` is False.

    ``rules`` (consumed one per ingest request) script failures; ``always`` applies to every
    request while set. ``tls`` is an ``ssl.SSLContext`` for the server side.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.stored: list[tuple[str, int]] = []
        self.batches: list[Batch] = []
        self.requests: list[list[tuple[str, int]]] = []  # batch ids per ingest request, in order
        self.health_checks = 0
        self.handshake_failures = 0
        self.rules: list[Rule] = []
        self.always: Rule | None = None
        self.healthy = True
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with peer.lock:
                    peer.health_checks += 1
                ok = self.path == "/healthz" and peer.healthy
                self._answer(Answer(200 if ok else 503, b'{"status":"ok"}' if ok else b"{}"))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self._answer(peer.handle(self.path, body))

            def _answer(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[object, object]:  # type: ignore[override]
                try:
                    return super().get_request()  # type: ignore[no-any-return]
                except (ssl.SSLError, OSError):
                    with peer.lock:  # the TLS handshake failed (a client that does not trust us)
                        peer.handshake_failures += 1
                    raise

        self.server = Server(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, path: str, body: bytes) -> Answer:
        assert path == "/api/v1/ingest"
        envelope = decode_envelope(body)
        ids = [(b.boot_id, b.seq) for b in envelope.batches]
        with self.lock:
            self.requests.append(ids)
            rule = self.rules.pop(0) if self.rules else self.always
            answer = rule(ids) if rule else None
            if answer is not None:
                return answer
            results = []
            for batch in envelope.batches:
                key = (batch.boot_id, batch.seq)
                if key in self.stored:
                    results.append(ItemResult(key[0], key[1], "duplicate"))
                else:
                    self.stored.append(key)
                    self.batches.append(batch)
                    results.append(ItemResult(key[0], key[1], "accepted"))
            return Answer(200, encode(IngestResponse(results=results, server_ms=TS)))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def server_tls(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(CERTS / cert), str(CERTS / key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(CERTS / client_ca))
    return context


def sample_batch(
    seq: int, boot: str = "boot1", priority: bool = False, samples: int = 1, created_ms: int | None = None
) -> Batch:
    return Batch(
        agent_id="ws-1",
        boot_id=boot,
        seq=seq,
        created_ms=TS + seq if created_ms is None else created_ms,
        samples=[
            Sample(name="lifeline_probe_success", value=1.0, ts_ms=TS + seq * 1000 + n)
            for n in range(samples)
        ],
        priority=priority,
    )


def fill(spool: Spool, count: int, boot: str = "boot1", start: int = 0) -> list[tuple[str, int]]:
    for seq in range(start, start + count):
        spool.append(sample_batch(seq, boot))
    return [(boot, seq) for seq in range(start, start + count)]


def collector_section(*urls: str | CollectorEndpoint, **options: object) -> CollectorSection:
    endpoints = tuple(u if isinstance(u, CollectorEndpoint) else CollectorEndpoint(u) for u in urls)
    values: dict[str, object] = {"timeout": 2.0, **options}
    return CollectorSection(endpoints=endpoints, **values)  # type: ignore[arg-type]


def make_shipper(
    section: CollectorSection, spool: Spool, route_file: str = "/nonexistent", **options: object
) -> Shipper:
    """A shipper with fast backoff; ``route_file`` without default routes means no backup path."""
    values: dict[str, object] = {
        "backoff": Backoff(initial=0.02, maximum=0.2),
        "route_file": route_file,
        **options,
    }
    return Shipper(AgentSection(id="ws-1", site="north", position="12"), section, spool, TOKEN, **values)  # type: ignore[arg-type]


def run_until(shipper: Shipper, done: Callable[[], bool], limit: float = 30.0) -> None:
    """Run the shipper loop until ``done()`` (or ``limit`` seconds: a guard, not an assertion)."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        deadline = time.monotonic() + limit
        while not done() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await shipper.aclose()

    asyncio.run(main())
