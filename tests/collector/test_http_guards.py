"""The collector as ``serve`` runs it (uvicorn on a loopback port, real sockets): forwarding headers
believed only from trusted proxies, so the admin lockout can be neither dodged nor turned on
others; slow or endless request headers and slow bodies cut off; health that tells the truth
about the store; an unusable store directory is one clear line."""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from collector_kit import T0, cad_round, envelope, free_port, make_config, serving
from serve_kit import served

from lifeline_collector.app import create_app
from lifeline_collector.cli import main
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import CollectorConfig
from lifeline_collector.errors import DuplicateAgentError
from lifeline_collector.service import Collector
from lifeline_wire import Sample

MS = int(T0 * 1000)
ADMIN_TOKEN = "an-admin-token-of-some-length"
SILENCE = {"matchers": ["agent=pos-1"], "createdBy": "vic", "duration": "1h"}


def guarded_config(tmp_path: Path, **server: Any) -> CollectorConfig:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN)
    return make_config(
        tmp_path,
        server={"listen": f"127.0.0.1:{free_port()}", **server},
        api={"admin_token_file": str(token_file), "lockout_after": 3},
        auth={"read_access": "open"},
    )


def test_forwarded_for_is_not_believed_by_default_so_rotating_it_dodges_no_lockout(tmp_path: Path) -> None:
    with served(guarded_config(tmp_path)) as (base, _service), httpx.Client(base_url=base) as http:
        statuses = [
            http.post(
                "/api/v1/silences",
                json=SILENCE,
                headers={"Authorization": "Bearer wrong", "X-Forwarded-For": f"198.51.100.{i}"},
            ).status_code
            for i in range(6)
        ]
        assert statuses == [401, 401, 401, 429, 429, 429]
        good = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": "198.51.100.99"}
        assert http.post("/api/v1/silences", json=SILENCE, headers=good).status_code == 429


def test_behind_a_trusted_proxy_only_the_offending_client_is_locked_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = guarded_config(tmp_path, trusted_proxies=["127.0.0.1/32"])
    with served(config) as (base, _service), httpx.Client(base_url=base) as http:
        attacker = {"Authorization": "Bearer wrong", "X-Forwarded-For": "198.51.100.7"}
        statuses = [
            http.post("/api/v1/silences", json=SILENCE, headers=attacker).status_code for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        operator = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": "198.51.100.8"}
        assert http.post("/api/v1/silences", json=SILENCE, headers=operator).status_code == 201
    assert any("198.51.100.7 locked out" in r.getMessage() for r in caplog.records)


def test_a_locked_out_loopback_address_names_the_setting_that_helps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with served(guarded_config(tmp_path)) as (base, _service), httpx.Client(base_url=base) as http:
        for _ in range(3):
            http.post("/api/v1/silences", json=SILENCE, headers={"Authorization": "Bearer wrong"})
    (locked,) = [r.getMessage() for r in caplog.records if "locked out" in r.getMessage()]
    assert "server.trusted_proxies" in locked


def closed_by_peer(sock: socket.socket, trickle: list[bytes], every: float) -> int | None:
    """Send ``trickle`` piece by piece; how many pieces went out before the peer closed, or None."""
    sock.settimeout(every)
    for sent, piece in enumerate(trickle):
        try:
            if sock.recv(1024) == b"":
                return sent
        except TimeoutError:
            pass
        except ConnectionError:
            return sent
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return sent
    return None


def test_slow_request_headers_are_cut_off(tmp_path: Path) -> None:
    config = guarded_config(tmp_path, header_timeout="1s")
    host, port = config.server.host, config.server.port
    with served(config) as (base, _service):
        # Slowloris: a header line every 0.25 s would take 40 s; the server closes after about 1 s.
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"POST /api/v1/ingest HTTP/1.1\r\nHost: collector\r\n")
            sent = closed_by_peer(sock, [b"X-Slow: 1\r\n"] * 160, 0.25)
        assert sent is not None, "a trickle of headers kept the connection open"
        assert sent < 160
        # A connection that sends nothing at all.
        with socket.create_connection((host, port)) as sock:
            assert closed_by_peer(sock, [b""] * 160, 0.25) is not None
        # Endless headers, sent fast.
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n")
            assert closed_by_peer(sock, [b"X-Big: " + b"a" * 8000 + b"\r\n"] * 100, 0.01) is not None
        # Whoever sends a request properly is served as before.
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_a_slow_ingest_body_is_answered_408(tmp_path: Path) -> None:
    config = guarded_config(tmp_path, body_timeout="1s")
    with served(config) as (_base, service):
        token = service.store.add_agent("pos-1", now_ms=MS)
        body = envelope("pos-1", (0, cad_round(MS, True, 0)))
        with socket.create_connection((config.server.host, config.server.port)) as sock:
            sock.sendall(
                b"POST /api/v1/ingest HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            sock.settimeout(0.25)
            answer = b""
            for byte in body[:160]:
                sock.sendall(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    answer += sock.recv(4096)
                if answer:
                    break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


@pytest.mark.anyio
async def test_health_tells_the_store_cannot_take_writes_and_the_log_names_why(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}
    store = service.store._db
    async with serving(app) as client:
        assert (
            await client.post(
                "/api/v1/ingest", content=envelope("pos-1", (0, cad_round(MS, True, 0))), headers=auth
            )
        ).status_code == 200
        # The disk is full (SQLite's own limit stands in for it: the same SQLITE_FULL error).
        pages = store.execute("PRAGMA page_count").fetchone()[0]
        store.execute(f"PRAGMA max_page_count = {pages}")
        labels = {"target": "t", "role": "isp", "kind": "icmp"}
        many = [
            Sample("lifeline_probe_success", 1.0, MS + i, {**labels, "target": f"t{i % 50}"})
            for i in range(3000)
        ]
        refused = await client.post("/api/v1/ingest", content=envelope("pos-1", (1, many)), headers=auth)
        assert refused.status_code == 503
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert "full" in health.json()["status"]
        # Space again: the next ingest goes through and health recovers.
        store.execute("PRAGMA max_page_count = 1073741823")
        assert (
            await client.post("/api/v1/ingest", content=envelope("pos-1", (1, many)), headers=auth)
        ).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("full" in m for m in messages), messages
    assert not any("cannot rollback" in m for m in messages), messages


def test_an_unusable_store_directory_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = tmp_path / "collector.toml"
    config.write_text(f'[store]\npath = "{blocker / "lifeline.db"}"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert not isinstance(result.exception, OSError), result.exception  # no traceback
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: cannot open store")
    assert "lifeline.db" in line


@pytest.mark.anyio
async def test_a_refused_statement_is_no_store_trouble_for_health(tmp_path: Path, clock: ManualClock) -> None:
    """A write refused for its content (here a duplicate agent) says nothing about the store: a
    503 would make a load balancer drop a collector that works."""
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    service.store.add_agent("pos-1", now_ms=MS)
    async with serving(app) as client:
        with pytest.raises(DuplicateAgentError):
            service.store.add_agent("pos-1", now_ms=MS)
        assert (await client.get("/healthz")).status_code == 200


def test_a_large_body_arriving_with_its_headers_is_not_taken_for_endless_headers(tmp_path: Path) -> None:
    # A backlog batch is several hundred KB: its first read holds the headers and much of the body.
    config = guarded_config(tmp_path)
    host, port = config.server.host, config.server.port
    body = b"{" + b" " * 300_000 + b"}"
    request = (
        b"POST /api/v1/ingest HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer not-an-agent\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with served(config) as (_base, _service), socket.create_connection((host, port)) as sock:
        sock.sendall(request + body)
        sock.settimeout(10)
        answer = b""
        with contextlib.suppress(TimeoutError):
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 4"), f"the request was not answered: {answer[:80]!r}"
