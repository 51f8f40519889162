"""TCP_INFO of CAD sessions: recorded inet_diag replies and ss output, real loopback connections."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlink_recordings import recorded_messages

from lifeline_agent.errors import SourceParseError
from lifeline_agent.sources.cad_sessions import (
    SOCK_DIAG_BY_FAMILY,
    CadEndpoint,
    CadSessionFacts,
    CadSessionsSource,
    DiagBackend,
    SsBackend,
    TcpSession,
    filter_bytecode,
    match,
    normalize,
    parse_ss,
    session_from_diag,
    session_from_raw,
)

CAD = {"cad": ({"10.20.0.10"}, 443), "cad-alt": ({"10.20.0.11"}, 0)}


def test_inet_diag_message(fixtures: Path) -> None:
    session = session_from_diag(json.loads((fixtures / "inet_diag_cad.json").read_text()))
    assert session == TcpSession(
        "192.168.1.50", 48970, "10.20.0.10", 443, 0.086412, 0.0215, 8, 5, 1, retransmits=1, rto=0.42
    )
    assert session_from_diag({"idiag_src": "1.2.3.4", "attrs": []}) is None


def test_ss_output(fixtures: Path) -> None:
    sessions = parse_ss((fixtures / "ss_established.txt").read_text())
    assert sessions[0] == TcpSession(
        "192.168.1.50",
        48970,
        "10.20.0.10",
        443,
        0.086412,
        0.0215,
        8,
        5,
        1,
        retransmits=1,
        rto=0.42,
        since_ack=0.096,
    )
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


def _recorded(fixtures: Path, key: str) -> list[tuple[bytes, memoryview]]:
    """(the message with its header, payload) of each inet_diag_msg of a recorded dump."""
    messages = recorded_messages(fixtures / "inet_diag_raw.json", key)
    return [(message, payload) for kind, message, payload in messages if kind == SOCK_DIAG_BY_FAMILY]


@pytest.mark.parametrize("key", ["inet", "inet6", "inet_unfiltered", "inet6_unfiltered"])
def test_recorded_replies_decode_as_pyroute2_decodes_them(fixtures: Path, key: str) -> None:
    from pyroute2.netlink.diag import inet_diag_msg

    recorded = _recorded(fixtures, key)
    assert recorded
    for message, payload in recorded:
        reference = inet_diag_msg(message)
        reference.decode()
        assert session_from_raw(payload) == session_from_diag(reference.dump())


def test_the_kernel_filter_kept_only_the_cad_sessions(fixtures: Path) -> None:
    ours = [session_from_raw(p) for key in ("inet", "inet6") for _, p in _recorded(fixtures, key)]
    assert ours == [
        TcpSession("192.168.1.50", 52345, "10.20.0.10", 443, 8e-06, 4e-06, 0, 0, 0, 0, 0.204, 1.616),
        # segments lost to an nft drop rule while the dump was taken: the oldest unacknowledged one
        # retransmitted twice in a row, its timeout backed off from 204 to 816 ms
        TcpSession("192.168.1.50", 58255, "10.20.0.10", 443, 2e-05, 1.1e-05, 3, 1, 1, 2, 0.816, 1.616),
        TcpSession("fd20::50", 42185, "fd20::10", 443, 1.5e-05, 8e-06, 0, 0, 0, 0, 0.204, 1.612),
        # a dual-stack IPv6 socket: its IPv4-mapped peer passed the IPv4 condition
        TcpSession("192.168.1.50", 48603, "10.20.0.11", 8443, 9e-06, 4e-06, 0, 0, 0, 0, 0.204, 1.612),
    ]
    every = [
        session_from_raw(p)
        for key in ("inet_unfiltered", "inet6_unfiltered")
        for _, p in _recorded(fixtures, key)
    ]
    assert len(every) == 10  # the server sides and a non-CAD session, which the filter left out
    wanted = {"cad": ({"10.20.0.10", "fd20::10"}, 443), "cad-alt": ({"10.20.0.11"}, 0)}
    found = match([s for s in every if s is not None], wanted)
    assert sorted(s.sport for s in found["cad"]) == [42185, 52345, 58255]
    assert [s.dport for s in found["cad-alt"]] == [8443]


def test_a_short_message_is_an_error_and_one_without_tcp_info_is_skipped(fixtures: Path) -> None:
    _, payload = _recorded(fixtures, "inet")[0]
    with pytest.raises(ValueError, match="inet_diag_msg of 40 bytes"):
        session_from_raw(payload[:40])
    assert session_from_raw(payload[:72]) is None  # the header alone: no INET_DIAG_INFO


def test_filter_bytecode_layout() -> None:
    # One condition: D_COND (code 8), true → fall off the end (accept), false → 4 past it (reject).
    one = filter_bytecode([("10.20.0.10", 443)])
    assert one == bytes([8, 16, 20, 0, 2, 32, 0, 0]) + (443).to_bytes(4, "little") + bytes([10, 20, 0, 10])
    # Two: the first holds → a JMP (code 1) over the second; fails → jumps over that JMP to it.
    two = filter_bytecode([("10.20.0.10", 443), ("fd20::10", 0)])
    assert list(two[16:20]) == [1, 4, 4 + 28, 0]
    assert list(two[20:24]) == [8, 28, 32, 0]
    assert int.from_bytes(two[28:32], "little", signed=True) == -1  # any port
    assert len(two) == 16 + 4 + 28


class Replay:
    """A backend replaying recorded ``ss`` snapshots one per read (sessions opening, losing, closing)."""

    name = "replay"

    def __init__(self, snapshots: list[list[TcpSession]]) -> None:
        self.snapshots = iter(snapshots)
        self.asked: list[list[tuple[str, int]]] = []

    def available(self) -> object:
        raise NotImplementedError

    def sessions(self, wanted: list[tuple[str, int]]) -> list[TcpSession]:
        self.asked.append(list(wanted))
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
    replay = Replay(snapshots)
    source = CadSessionsSource([CadEndpoint("cad", "10.20.0.10", 443)], [replay])  # type: ignore[list-item]
    readings = [source.read() for _ in snapshots]
    assert replay.asked[0] == [("10.20.0.10", 443)]  # the backend is told which peers to keep
    facts = [r.facts.get("cad") for r in readings]  # type: ignore[union-attr]
    assert facts[0] == CadSessionFacts("cad", 1, 0.05, 0.01, 0, 0, 0, rto=0.0)
    assert facts[1] == CadSessionFacts("cad", 2, 0.2, 0.01, 5, 3, 0, rto=0.0)
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


def test_the_source_asks_for_every_address_of_every_target() -> None:
    replay = Replay([[]])
    names = {"cad.agency": {"10.20.0.10", "fd20::10"}, "10.20.0.11": {"10.20.0.11"}}
    source = CadSessionsSource(
        [CadEndpoint("cad", "cad.agency", 443), CadEndpoint("cad-alt", "10.20.0.11")],
        [replay],  # type: ignore[list-item]
        resolve=lambda host: names[host],
    )
    assert source.read().ok
    assert replay.asked == [[("10.20.0.10", 443), ("10.20.0.11", 0), ("fd20::10", 443)]]


@pytest.fixture
def loopback_sessions() -> Iterator[dict[str, int]]:
    """Real established connections on loopback: two CAD servers (one IPv6) and a bystander."""
    opened: list[socket.socket] = []
    ports: dict[str, int] = {}

    def connect(name: str, family: socket.AddressFamily, listen: str, to: str) -> None:
        server = socket.create_server((listen, 0), family=family, dualstack_ipv6=family == socket.AF_INET6)
        ports[name] = server.getsockname()[1]
        client = socket.socket(socket.AF_INET6 if ":" in to else socket.AF_INET)
        client.connect((to, ports[name]))
        accepted, _ = server.accept()
        opened.extend((server, client, accepted))

    connect("cad", socket.AF_INET, "127.0.0.1", "127.0.0.1")
    connect("cad6", socket.AF_INET6, "::", "::1")
    connect("mapped", socket.AF_INET6, "::", "::ffff:127.0.0.1")  # a dual-stack client socket
    connect("other", socket.AF_INET, "127.0.0.1", "127.0.0.1")
    yield ports
    for sock in opened:
        sock.close()


@pytest.mark.parametrize("both_families", [True, False], ids=["tcpdiag-one-walk", "per-family"])
def test_the_kernel_returns_only_the_sessions_asked_for(
    loopback_sessions: dict[str, int], both_families: bool
) -> None:
    ports = loopback_sessions
    backend = DiagBackend()
    backend._both_families = both_families  # False: the requests used on a kernel refusing the old one
    try:
        assert backend.available().ok
        found = backend.sessions([("127.0.0.1", ports["cad"]), ("::1", ports["cad6"])])
        assert sorted((s.dst, s.dport) for s in found) == sorted(
            [("127.0.0.1", ports["cad"]), ("::1", ports["cad6"])]
        )
        assert all(s.rtt > 0 for s in found)
        (mapped,) = backend.sessions([("127.0.0.1", ports["mapped"])])  # found in the IPv6 dump
        assert (mapped.src, mapped.dst) == ("127.0.0.1", "127.0.0.1")
        # Any port: every client socket to 127.0.0.1 and every server side (its peer is 127.0.0.1 too).
        anyport = backend.sessions([("127.0.0.1", 0)])
        assert {ports["cad"], ports["mapped"], ports["other"]} <= {s.dport for s in anyport}
        assert backend.sessions([("10.255.255.1", 443)]) == []
        assert backend.sessions([]) == []  # nothing asked: no dump at all
        assert backend._both_families is both_families  # this kernel takes both kinds of request
    finally:
        backend.close()


def test_one_socket_for_every_read(loopback_sessions: dict[str, int]) -> None:
    backend = DiagBackend()
    try:
        backend.sessions([("127.0.0.1", loopback_sessions["cad"])])
        sock = backend._sock
        assert sock is not None
        assert backend.available().ok
        assert len(backend.sessions([("127.0.0.1", loopback_sessions["cad"])])) == 1
        assert backend._sock is sock  # kept open, not one socket per read
        backend.close()
        assert backend._sock is None
        assert len(backend.sessions([("127.0.0.1", loopback_sessions["cad"])])) == 1  # opens again
    finally:
        backend.close()


def test_a_stalling_session_is_told_from_a_struggling_one() -> None:
    """The facts carry how each session is doing now: the most retransmissions in a row of one
    segment, and the longest wait for an acknowledgement of a session with data in flight."""
    struggling = TcpSession("192.168.1.50", 1000, "10.20.0.10", 443, 0.05, 0.01, 9, 2, 0, 1, 0.3, 0.2)
    stalling = TcpSession("192.168.1.50", 1001, "10.20.0.10", 443, 0.05, 0.01, 4, 3, 1, 3, 1.6, 2.8)
    idle = TcpSession("192.168.1.50", 1002, "10.20.0.10", 443, 0.05, 0.01, 0, 0, 0, 0, 0.2, 9.0)
    replay = Replay([[struggling, stalling, idle]])
    source = CadSessionsSource([CadEndpoint("cad", "10.20.0.10", 443)], [replay])  # type: ignore[list-item]
    facts = source.read().facts.get("cad")  # type: ignore[union-attr]
    assert facts is not None
    assert (facts.stalled, facts.rto, facts.since_ack) == (3, 1.6, 2.8)  # the idle session waits for nothing
