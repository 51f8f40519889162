"""The agent's HTTP transport against a real uvicorn on loopback: kept-alive connections the server
closed, and collector addresses that need no resolver."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import pytest
import uvicorn

from lifeline_agent.config import CollectorSection
from lifeline_agent.delivery import transport as transport_module
from lifeline_agent.delivery.transport import KEEPALIVE_EXPIRY, BoundBackend, HttpxTransport

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class UvicornPeer:
    """uvicorn serving a tiny ASGI app on a loopback port, in a thread; records each request's client
    address (a new source port is a new TCP connection)."""

    def __init__(self, host: str = "127.0.0.1", keep_alive: float = 5.0) -> None:
        self.clients: list[tuple[str, int]] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        port = self.sock.getsockname()[1]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        config = uvicorn.Config(
            self.app,
            timeout_keep_alive=keep_alive,
            log_level="warning",
            log_config=None,
            lifespan="off",
            interface="asgi3",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    async def app(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        self.clients.append(tuple(scope["client"]))  # type: ignore[arg-type]
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def quick_closing_peer() -> Iterator[UvicornPeer]:
    """A server that closes a connection idle for 1 s (uvicorn's default is 5 s)."""
    peer = UvicornPeer(keep_alive=1.0)
    yield peer
    peer.close()


def test_a_request_on_a_connection_the_server_closed_goes_again_on_a_fresh_one(
    quick_closing_peer: UvicornPeer,
) -> None:
    peer = quick_closing_peer

    async def scenario() -> list[int]:
        transport = HttpxTransport(CollectorSection())
        try:
            statuses = [(await transport.post(peer.url + "/api/v1/ingest", b"{}", {})).status]
            # The server closes the idle connection while the agent's loop is busy elsewhere, so
            # the pool has not yet read the close and still holds the connection as reusable: the
            # race that sent every few batches into "ReadError: Broken pipe" and a retry.
            time.sleep(1.5)
            statuses.append((await transport.post(peer.url + "/api/v1/ingest", b"{}", {})).status)
            statuses.append((await transport.get(peer.url + "/healthz")).status)  # the new one is kept
            return statuses
        finally:
            await transport.aclose()

    assert asyncio.run(scenario()) == [200, 200, 200]
    ports = [port for _host, port in peer.clients]
    assert len(ports) == 3  # the request that met the closed connection never reached the server
    assert ports[0] != ports[1]  # ... and went again on a fresh connection
    assert ports[1] == ports[2]  # which is then kept alive


def test_connections_are_not_kept_as_long_as_uvicorn_keeps_them() -> None:
    """Reuse must stop before the server's own idle timeout, with room for the response's way back."""
    server_default = uvicorn.Config(app=None).timeout_keep_alive
    margin = server_default - KEEPALIVE_EXPIRY
    assert margin >= 1.0


@pytest.fixture
def resolver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host the event loop is asked to resolve in this test."""
    calls: list[str] = []
    real = asyncio.BaseEventLoop.getaddrinfo

    async def counting(self: asyncio.BaseEventLoop, host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(host))
        return await real(self, host, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", counting)
    monkeypatch.setattr(transport_module, "_RESOLVED", {})
    return calls


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_an_address_literal_is_connected_to_without_the_resolver(
    host: str, resolver_calls: list[str]
) -> None:
    peer = UvicornPeer(host)
    try:

        async def scenario() -> int:
            transport = HttpxTransport(CollectorSection())
            try:
                return (await transport.post(peer.url + "/api/v1/ingest", b"{}", {})).status
            finally:
                await transport.aclose()

        assert asyncio.run(scenario()) == 200
    finally:
        peer.close()
    assert resolver_calls == []
    assert peer.clients[0][0] == host


def test_a_name_still_goes_through_the_resolver(resolver_calls: list[str]) -> None:
    peer = UvicornPeer()
    try:

        async def scenario() -> None:
            port = int(peer.url.rsplit(":", 1)[1])
            stream = await BoundBackend().connect_tcp("localhost", port, timeout=5.0)
            await stream.aclose()

        asyncio.run(scenario())
    finally:
        peer.close()
    assert resolver_calls == ["localhost"]
