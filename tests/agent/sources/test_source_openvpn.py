"""OpenVPN management replies and status files (client, server v1, v2 CSV, v3 tabs)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline_agent.errors import SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.sources.openvpn import (
    Management,
    OpenVpnState,
    OpenVpnStatus,
    parse_state_line,
    parse_state_reply,
    parse_status,
    read_status_file,
)


def test_state_reply_newest_line_wins(fixtures: Path) -> None:
    state = parse_state_reply((fixtures / "openvpn_mgmt_state_connected.txt").read_text().splitlines())
    assert state == OpenVpnState("CONNECTED", "SUCCESS", 1717000003.0, "203.0.113.20:1194")
    assert state.connected


def test_state_notification_and_reconnecting(fixtures: Path) -> None:
    assert parse_state_line(">STATE:1717000400,RECONNECTING,ping-restart,,,,,").state == "RECONNECTING"
    state = parse_state_reply((fixtures / "openvpn_mgmt_state_reconnecting.txt").read_text().splitlines())
    assert (state.state, state.reason, state.connected) == ("RECONNECTING", "ping-restart", False)


def test_state_errors() -> None:
    with pytest.raises(SourceReadError, match="ERROR: unknown command"):
        parse_state_reply(["ERROR: unknown command, enter 'help' for more options"])
    with pytest.raises(SourceParseError, match="time is not a number"):
        parse_state_line("yesterday,CONNECTED,SUCCESS")
    with pytest.raises(SourceParseError, match="empty reply"):
        parse_state_reply(["END"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openvpn_status_client.txt", OpenVpnStatus(292359, 202401, None, 1)),
        ("openvpn_status_v1_server.txt", OpenVpnStatus(125045, 105877, 2, 1)),
        ("openvpn_status_v2.txt", OpenVpnStatus(120045, 98877, 1, 2)),
        ("openvpn_status_v3.txt", OpenVpnStatus(120045, 98877, 1, 3)),
    ],
)
def test_status_formats(fixtures: Path, name: str, expected: OpenVpnStatus) -> None:
    assert parse_status((fixtures / name).read_text()) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("OpenVPN STATISTICS\nUpdated,x\nEND\n", "without TCP/UDP"),
        (
            "OpenVPN STATISTICS\nTCP/UDP read bytes,many\nTCP/UDP write bytes,1\n",
            "status line 2: not an integer",
        ),
        ("HELLO\n", "unknown format"),
        ("TITLE,x\nCLIENT_LIST,a,b\n", "CLIENT_LIST before its HEADER"),
    ],
)
def test_status_errors(text: str, message: str) -> None:
    with pytest.raises(SourceParseError, match=message):
        parse_status(text)


def test_status_file_fresh_and_stale(tmp_path: Path, fixtures: Path) -> None:
    path = tmp_path / "client.status"
    path.write_bytes((fixtures / "openvpn_status_client.txt").read_bytes())
    report = read_status_file(str(path))
    assert report.source == "status_file"
    assert report.state is None
    assert report.status == OpenVpnStatus(292359, 202401, None, 1)
    old = time.time() - 600
    os.utime(path, (old, old))
    with pytest.raises(SourceReadError, match="not rewritten for"):
        read_status_file(str(path))
    with pytest.raises(SourceUnavailable, match="missing"):
        read_status_file(str(tmp_path / "absent.status"))


@pytest.fixture
def management(fixtures: Path) -> Iterator[tuple[str, list[str], threading.Thread]]:
    """A real TCP management interface on loopback replaying recorded replies (password: "s3cret")."""
    greeting = (fixtures / "openvpn_mgmt_greeting.txt").read_bytes()
    replies = {
        "state": (fixtures / "openvpn_mgmt_state_connected.txt").read_bytes(),
        "status": (fixtures / "openvpn_status_client.txt").read_bytes(),
    }
    commands: list[str] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"ENTER PASSWORD:")
            buffer = b""
            authed = False
            while True:
                chunk = conn.recv(256)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    text = line.decode().strip()
                    if not authed:
                        authed = text == "s3cret"
                        conn.sendall(
                            b"SUCCESS: password is correct\r\n" + greeting if authed else b"ERROR: bad\r\n"
                        )
                        continue
                    commands.append(text)
                    # A real-time notification may arrive between replies: the client must cope.
                    if text == "status":
                        conn.sendall(b">BYTECOUNT:292359,202401\r\n")
                    if text == "quit":
                        return
                    conn.sendall(replies.get(text, b"ERROR: unknown command\r\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = server.getsockname()
    yield f"{host}:{port}", commands, thread
    thread.join(5)
    server.close()


def test_management_session_over_a_real_socket(management: tuple[str, list[str], threading.Thread]) -> None:
    address, commands, server = management
    report = Management(address, password="s3cret", timeout=5.0).read()
    assert report.source == "management"
    assert report.state == OpenVpnState("CONNECTED", "SUCCESS", 1717000003.0, "203.0.113.20:1194")
    assert report.status == OpenVpnStatus(292359, 202401, None, 1)
    server.join(5)  # the server records "quit" after the client has gone
    assert commands == ["state", "status", "quit"]
    assert "s3cret" not in repr(Management(address, password="s3cret"))


def test_management_needs_its_password(management: tuple[str, list[str], threading.Thread]) -> None:
    address, _, _ = management
    with pytest.raises(SourceUnavailable, match="needs a password"):
        Management(address, timeout=5.0).read()


def test_management_not_listening() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnavailable, match="not listening"):
        Management(f"127.0.0.1:{port}").read()
