"""How uvicorn serves the collector: whose forwarding headers are believed, and how long and how
much a client may take to send a request's headers.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, so anything on the
collector's host could claim any client address (and walk around the admin lockout, which is
kept per address). Here only ``server.trusted_proxies`` are believed; with none, the peer
address is the client.

uvicorn arms no timer while a request's headers arrive (its keep-alive timer stops at the first
byte), so a client sending one header byte now and then holds a connection for ever (slowloris).
``GuardedHttpToolsProtocol`` closes a connection whose request headers are not complete within
``server.header_timeout`` seconds of the connection or of the request's first byte, or that sends
more than ``MAX_HEADER_BYTES`` of them. The body has its own deadline in the ingest handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lifeline_collector.config import ServerSection

log = logging.getLogger("lifeline_collector.http")

MAX_HEADER_BYTES = 64 * 1024  # a request line and headers; an agent's are a few hundred bytes
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open (uvicorn's default)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound on each request's headers."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        super().connection_made(transport)
        self._await_headers()  # a connection that sends nothing at all is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The parser sees the chunk first: one read often holds a request's headers *and* a large
        # part of its body (a backlog batch), and only bytes of headers still incomplete after it
        # count against the bound. A read is at most the transport's buffer, so this holds little.
        super().data_received(data)
        if self._header_deadline is None or self.transport.is_closing():
            return
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._close(f"sent more than {MAX_HEADER_BYTES} bytes of headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def _await_headers(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _headers_done(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        self._close(f"sent no complete request headers within {self.header_timeout:g} s")

    def _close(self, why: str) -> None:
        self._headers_done()
        if not self.transport.is_closing():
            peer = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info("connection from %s closed: %s", peer, why)
            self.transport.close()


def guarded_protocol(header_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with ``header_timeout`` (uvicorn builds one instance per connection)."""

    class Guarded(GuardedHttpToolsProtocol):
        pass

    Guarded.header_timeout = header_timeout
    return Guarded


def uvicorn_config(app: Any, server: ServerSection, *, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn settings ``lifeline-collector serve`` runs with (tests serve the same way)."""
    trusted = list(server.trusted_proxies)
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_level=log_level,
        log_config=None,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE,
        server_header=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        http=guarded_protocol(server.header_timeout),
    )
