"""TCP_INFO of CAD sessions: recorded inet_diag and ss output, and a real loopback connection."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline_agent.sources.cad_sessions import (
    CadEndpoint,
    CadSessionFacts,
    CadSessionsSource,
    DiagBackend,
    SsBackend,
    TcpSession,
    match,
    normalize,
    parse_ss,
    session_from_diag,
)
from lifeline_agent.sources.errors import SourceParseError

CAD = {"cad": ({"10.20.0.10"}, 443), "cad-alt": ({"10.20.0.11"}, 0)}


def test_inet_diag_message(fixtures: Path) -> None:
    session = session_from_diag(json.loads((fixtures / "inet_diag_cad.json").read_text()))
    assert session == TcpSession("192.168.1.50", 48970, "10.20.0.10", 443, 0.086412, 0.0215, 8, 5, 1)
    assert session_from_diag({"idiag_src": "1.2.3.4", "attrs": []}) is None


def test_ss_output(fixtures: Path) -> None:
    sessions = parse_ss((fixtures / "ss_established.txt").read_text())
    assert sessions[0] == TcpSession("192.168.1.50", 48970, "10.20.0.10", 443, 0.086412, 0.0215, 8, 5, 1)
    assert sessions[1].total_retrans == 0
    assert sessions[1].unacked == 0
    assert (sessions[3].src, sessions[3].dport) == ("::1", 53450)
    assert (sessions[4].dst, sessions[4].total_retrans) == ("10.20.0.11", 2)  # IPv4-mapped peer
    assert len(sessions) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0 1.2.3.4:5\n", "expected Recv-Q"),
        ("\t rtt:1/1\n", "without a socket line"),
        ("0 0 a b\n", "address"),
    ],
)
def test_ss_errors(text: str, message: str) -> None:
    with pytest.raises(SourceParseError, match=message):
        parse_ss(text)


def test_match_by_address_and_port(fixtures: Path) -> None:
    found = match(parse_ss((fixtures / "ss_established.txt").read_text()), CAD)
    assert [s.sport for s in found["cad"]] == [48970, 48972]
    assert [s.dport for s in found["cad-alt"]] == [8443]
    assert normalize("::ffff:10.0.0.1") == "10.0.0.1"


class Replay:
    """A backend replaying recorded ``ss`` snapshots one per read (sessions opening, losing, closing)."""

    name = "replay"

    def __init__(self, snapshots: list[list[TcpSession]]) -> None:
        self.snapshots = iter(snapshots)

    def available(self) -> object:
        raise NotImplementedError

    def sessions(self) -> list[TcpSession]:
        return next(self.snapshots)


def _session(sport: int, retrans: int, rtt: float = 0.05, unacked: int = 0) -> TcpSession:
    return TcpSession("192.168.1.50", sport, "10.20.0.10", 443, rtt, 0.01, retrans, unacked)


def test_retransmits_are_monotonic_across_sessions() -> None:
    snapshots = [
        [_session(1000, 40)],  # open before the agent started: baseline, not counted
        [_session(1000, 43, rtt=0.2, unacked=3), _session(1001, 2)],  # 3 more, and a new session with 2
        [_session(1001, 5)],  # the first session closed; the second retransmitted 3 more
        [],  # CAD gone
    ]
    source = CadSessionsSource([CadEndpoint("cad", "10.20.0.10", 443)], [Replay(snapshots)])  # type: ignore[list-item]
    readings = [source.read() for _ in snapshots]
    facts = [r.facts.get("cad") for r in readings]  # type: ignore[union-attr]
    assert facts[0] == CadSessionFacts("cad", 1, 0.05, 0.01, 0, 0, 0)
    assert facts[1] == CadSessionFacts("cad", 2, 0.2, 0.01, 5, 3, 0)
    assert [f.retransmits for f in facts if f] == [0, 5, 8, 8]
    assert [f.sessions for f in facts if f] == [1, 2, 1, 0]
    assert [e.type for e in readings[3].events] == ["cad.session_lost"]
    values = {s.name: s.value for s in readings[1].samples}
    assert values == {
        "lifeline_cad_session_up": 2.0,
        "lifeline_cad_session_rtt_seconds": 0.2,
        "lifeline_cad_session_retransmits_total": 5.0,
        "lifeline_cad_session_unacked_segments": 3.0,
    }
    assert "lifeline_cad_session_rtt_seconds" not in {s.name for s in readings[3].samples}


def test_no_cad_target_is_unavailable() -> None:
    source = CadSessionsSource([], [DiagBackend()])
    assert source.available().ok is False
    assert not source.read().ok


@pytest.fixture
def loopback_session() -> Iterator[tuple[int, socket.socket, socket.socket]]:
    """A real established TCP connection on loopback (a stand-in CAD server and its client)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    client.sendall(b"x" * 1000)
    accepted.recv(1000)
    accepted.sendall(b"y")
    client.recv(1)
    yield port, client, accepted
    for sock in (client, accepted, server):
        sock.close()


@pytest.mark.parametrize("backend", [DiagBackend, SsBackend])
def test_real_tcp_info_on_loopback(
    backend: type[DiagBackend] | type[SsBackend], loopback_session: tuple[int, socket.socket, socket.socket]
) -> None:
    port, client, accepted = loopback_session
    source = CadSessionsSource([CadEndpoint("cad", "127.0.0.1", port)], [backend()])
    assert source.available().ok
    reading = source.read()
    assert reading.ok, reading.error
    facts = reading.facts.get("cad")  # type: ignore[union-attr]
    assert facts is not None
    assert facts.sessions == 1  # the client's socket; the server side's peer port is not the CAD port
    assert facts.rtt is not None
    assert facts.rtt > 0
    assert facts.unacked == 0
    client.close()
    accepted.close()
    after = source.read()
    assert after.facts.get("cad").sessions == 0  # type: ignore[union-attr]
    assert [e.type for e in after.events] == ["cad.session_lost"]
