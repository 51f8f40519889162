"""How the agent reaches a collector: kept-alive HTTP clients, one per way out of the laptop.

The default client follows the kernel's routing table. A bound client sets ``SO_BINDTODEVICE``
on its sockets so its requests leave through one interface (the hotspot's ``usb0``) whatever the
default route says — the "last gasp" path when home broadband is dead. The option must be set
*before* ``connect()``: the route and the source address are chosen when the SYN leaves. httpx's
``socket_options`` are applied by httpcore only after the connection is made, so bound clients
use ``BoundBackend``, a small httpcore network backend that binds first, then connects. Names
resolved while the primary path worked are remembered, so a dead DNS path does not also take
the backup path down; an address literal skips the resolver.

Kept-alive connections are reused only while the collector surely still holds them
(``KEEPALIVE_EXPIRY``, under uvicorn's 5 s), and a request that fails on a reused connection
before any answer came is sent again on a fresh one (``AttemptTrace``).

TLS comes from ``[collector]``: ``ca_file`` and, for mutual TLS, ``client_cert`` + ``client_key``,
the same for every endpoint and every path. Failures are classified here (``network`` or ``tls``)
so the shipper can log them plainly and back off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx

from lifeline_agent import __version__
from lifeline_agent.config import CollectorSection
from lifeline_agent.errors import RetryableDelivery
from lifeline_agent.probes.base import numeric_address

log = logging.getLogger(__name__)

SO_BINDTODEVICE: int | None = getattr(socket, "SO_BINDTODEVICE", None)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], interface: str = "") -> Response:
        """POST ``body`` (out of ``interface`` if given); raise RetryableDelivery when no HTTP answer came."""

    async def get(self, url: str, interface: str = "") -> Response:
        """GET ``url``: the cheap reachability check used to fail back to a preferred path."""

    async def aclose(self) -> None: ...


def ssl_context(collector: CollectorSection) -> ssl.SSLContext:
    """TLS settings for every endpoint; a file that cannot be loaded raises ssl.SSLError naming its key."""
    try:
        context = ssl.create_default_context(cafile=collector.ca_file or None)
    except (OSError, ValueError) as exc:
        raise ssl.SSLError(f"collector.ca_file {collector.ca_file!r} cannot be loaded: {_text(exc)}") from exc
    if collector.client_cert:
        try:
            context.load_cert_chain(collector.client_cert, collector.client_key or None)
        except (OSError, ValueError) as exc:
            raise ssl.SSLError(
                f"collector.client_cert/client_key {collector.client_cert!r}, {collector.client_key!r} "
                f"cannot be loaded: {_text(exc)}"
            ) from exc
    return context


def _text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# A note on exceptions that a TLS error caused: httpcore's pool re-raises ``from None``, which cuts
# the cause chain, while notes (PEP 678) stay with the exception.
TLS_NOTE = "lifeline: caused by a TLS error"


def _wrap(kind: type[httpcore.NetworkError], exc: OSError) -> httpcore.NetworkError:
    wrapped = kind(_text(exc))
    if isinstance(exc, ssl.SSLError):
        wrapped.add_note(TLS_NOTE)
    return wrapped


def failure_kind(exc: BaseException) -> str:
    """``tls`` when a TLS problem (handshake, certificate, TLS set-up) is behind ``exc``, else ``network``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError) or TLS_NOTE in getattr(current, "__notes__", ()):
            return "tls"
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return "network"


def bind_options(interface: str) -> list[tuple[int, int, bytes]]:
    """Socket options that send a client's connections out of ``interface`` (Linux only)."""
    if SO_BINDTODEVICE is None:
        raise OSError(f"binding to an interface ({interface}) is not supported on this system")
    return [(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode() + b"\0")]


# A connection idle this long is not reused. uvicorn (the collector) closes one idle for 5 s
# (``timeout_keep_alive``), counting from when it sent the response, which the agent sees later:
# reusing a connection near that age sends the request into a socket the server is closing, and
# it fails with "Broken pipe" or "connection reset". 4 s leaves a second for that difference.
KEEPALIVE_EXPIRY = 4.0
KEEPALIVE_CONNECTIONS = 2
# A request that failed on a reused connection before any answer is sent again, on a fresh one:
# the server had closed the idle connection (a proxy with a shorter timeout, a restart, a NAT that
# forgot it). Safe because ingest is idempotent (batches carry boot and sequence). Each failure
# drops that connection, so one more try than the pool keeps reaches a new connection.
STALE_RETRIES = KEEPALIVE_CONNECTIONS

# What httpcore may pass as socket options (its own alias is private).
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
# Addresses a host name resolved to, kept for when the resolver cannot be reached (primary dead).
_RESOLVED: dict[tuple[str, int], list[tuple[int, int, int, Any]]] = {}


class BoundStream(httpcore.AsyncNetworkStream):
    """An asyncio stream for httpcore; TLS is started on it by ``start_tls``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except OSError as exc:
            raise _wrap(httpcore.ReadError, exc) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except OSError as exc:
            raise _wrap(httpcore.WriteError, exc) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            await asyncio.wait_for(
                self._writer.start_tls(ssl_context, server_hostname=server_hostname), timeout
            )
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            await self.aclose()
            raise _wrap(httpcore.ConnectError, exc) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":  # an idle kept-alive connection the server closed
            return self._reader.at_eof() or self._writer.transport.is_closing()
        return None


class BoundBackend(httpcore.AsyncNetworkBackend):
    """Connections whose socket is bound to ``interface`` (if any) before ``connect()``.

    Used for the default route too (no interface), so every path reads and reports TLS alerts the
    same way: asyncio keeps the ``ssl.SSLError`` that anyio's stream turns into a bare "broken".
    """

    def __init__(self, interface: str = "") -> None:
        self.interface = interface
        self._options = bind_options(interface) if interface else []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        failure: OSError | None = None
        for family, kind, proto, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                for level, name, value in self._options:
                    sock.setsockopt(level, name, value)
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader, writer = await asyncio.open_connection(sock=sock)
            except TimeoutError as exc:
                sock.close()
                raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from exc
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            return BoundStream(reader, writer)
        raise httpcore.ConnectError(_text(failure) if failure else f"no address for {host}") from failure

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[tuple[int, int, int, Any]]:
        literal = _literal_address(host, port)
        if literal is not None:  # an address needs no resolver (nor the executor thread it runs on)
            return literal
        key = (host, port)
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as exc:
            if key in _RESOLVED:
                return _RESOLVED[key]
            raise httpcore.ConnectError(f"cannot resolve {host}: {_text(exc)}") from exc
        found: list[tuple[int, int, int, Any]] = [(f, k, p, a) for f, k, p, _name, a in infos]
        _RESOLVED[key] = found
        return found

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a bound client does not use UNIX sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _literal_address(host: str, port: int) -> list[tuple[int, int, int, Any]] | None:
    """``host`` as a connectable address when it is an IPv4/IPv6 literal, else None."""
    numeric = numeric_address(host, socket.AF_UNSPEC)
    if numeric is None:
        return None
    family = numeric[0]
    address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, address)]


class BoundHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on ``BoundBackend`` ("" = the default route)."""

    def __init__(self, interface: str, context: ssl.SSLContext) -> None:
        super().__init__(verify=context, trust_env=False)
        limits = httpx.Limits(
            max_connections=10,
            max_keepalive_connections=KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=BoundBackend(interface),
        )


class AttemptTrace:
    """httpcore's trace of one request: did it open a connection, did the response head arrive?"""

    __slots__ = ("answered", "connected")

    def __init__(self) -> None:
        self.connected = False
        self.answered = False

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        if event.startswith("connection.connect_tcp."):
            self.connected = True
        elif event == "http11.receive_response_headers.complete":
            self.answered = True

    def stale(self, exc: httpx.TransportError) -> bool:
        """``exc`` came from a reused connection the server had closed: no new connection was made,
        nothing was answered, and the failure is the socket's (not a timeout: the server may be busy)."""
        closed = isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))
        return closed and not self.connected and not self.answered


class HttpxTransport:
    """Kept-alive httpx clients: one for the default route and one per interface bound to."""

    def __init__(self, collector: CollectorSection) -> None:
        self.collector = collector
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._context: ssl.SSLContext | None = None
        self._tls_problem = ""
        self._retired: list[httpx.AsyncClient] = []
        self._load_tls()

    def _load_tls(self) -> None:
        try:
            self._context = ssl_context(self.collector)
        except ssl.SSLError as exc:
            problem = str(exc.args[0]) if exc.args else str(exc)
            if problem != self._tls_problem:
                log.error("TLS set-up failed: %s; https deliveries wait until it is fixed", problem)
            self._tls_problem = problem
            self._context = None
            return
        if self._tls_problem:
            log.info("TLS set-up works again")
        self._tls_problem = ""

    def _client(self, url: str, interface: str) -> httpx.AsyncClient:
        if url.startswith("https:") and self._context is None:
            self._load_tls()
            if self._context is None:
                tls_error = ssl.SSLError(self._tls_problem)
                raise RetryableDelivery(url, f"TLS set-up: {self._tls_problem}") from tls_error
            # Clients built while TLS could not be loaded carry the system defaults: replace them.
            self._retired.extend(self._clients.values())
            self._clients = {}
        client = self._clients.get(interface)
        if client is None:
            client = self._clients[interface] = self._new_client(interface)
        return client

    def _new_client(self, interface: str) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = self._context if self._context is not None else True
        common = {
            "timeout": self.collector.timeout,
            "headers": {"User-Agent": f"lifeline-agent/{__version__}"},
        }
        context = self._context if self._context is not None else ssl.create_default_context()
        transport = BoundHTTPTransport(interface, context)
        if not interface:  # proxies from the environment apply to the default route only
            return httpx.AsyncClient(transport=transport, verify=verify, **common)  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, trust_env=False, **common)  # type: ignore[arg-type]

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], interface: str = "") -> Response:
        return await self._request("POST", url, interface, body, headers)

    async def get(self, url: str, interface: str = "") -> Response:
        return await self._request("GET", url, interface, None, None)

    async def _request(
        self, method: str, url: str, interface: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> Response:
        try:
            client = self._client(url, interface)
        except OSError as exc:
            raise RetryableDelivery(url, f"cannot use interface {interface}: {_text(exc)}") from exc
        attempt = 0
        while True:
            seen = AttemptTrace()
            try:
                resp = await client.request(
                    method, url, content=body, headers=dict(headers or {}), extensions={"trace": seen}
                )
            except httpx.TransportError as exc:
                if attempt < STALE_RETRIES and seen.stale(exc):
                    attempt += 1
                    log.debug(
                        "%s %s: the server had closed the kept-alive connection (%s): again", method, url, exc
                    )
                    continue
                raise RetryableDelivery(url, describe(exc, interface)) from exc
            except httpx.DecodingError as exc:
                # Something answered with a body its own Content-Encoding cannot undo: not the
                # collector's answer. Retried like any failed attempt, so it cannot stop delivery.
                raise RetryableDelivery(url, f"an answer that cannot be decoded: {exc}") from exc
            return Response(resp.status_code, resp.headers, resp.content)

    async def aclose(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
            await client.aclose()
        self._clients = {}
        self._retired = []


def describe(exc: httpx.TransportError, interface: str = "") -> str:
    """One plain line for a failed request: what failed, and through which interface."""
    text = str(exc) or type(exc).__name__
    where = f" (bound to {interface})" if interface else ""
    if failure_kind(exc) == "tls":
        hint = " — check collector.ca_file" if "CERTIFICATE_VERIFY_FAILED" in text else ""
        return f"TLS failure{where}: {text}{hint}"
    return f"{type(exc).__name__}{where}: {text}"
