"""ICMP probe: packet building and parsing, and real echoes on loopback and in namespaces."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import Target
from lifeline_agent.logs import bind
from lifeline_agent.probes import ProbeContext, ProbeResult, icmp

NetnsProbe = Callable[[dict[str, Any], list[str], str], dict[str, Any]]
needs_icmp = pytest.mark.usefixtures("icmp_socket_ok")


def _target(**overrides: object) -> Target:
    values: dict[str, object] = {
        "name": "t",
        "role": "router",
        "kind": "icmp",
        "host": "127.0.0.1",
        "count": 4,
        "spacing": 0.01,
        "timeout": 0.5,
    }
    values.update(overrides)
    return Target(**values)  # type: ignore[arg-type]


def _run(target: Target) -> ProbeResult:
    clock = SystemClock()
    ctx = ProbeContext(bind(logging.getLogger("test"), probe="icmp"), clock.monotonic() + 5.0, clock)
    return asyncio.run(icmp.run(target, ctx))


def test_checksum_of_a_packet_with_its_checksum_is_zero() -> None:
    packet = icmp.echo_request(0x1234, 7)
    assert icmp.checksum(packet) == 0
    assert packet[0] == icmp.ECHO_REQUEST
    assert struct.unpack("!HH", packet[4:8]) == (0x1234, 7)


def test_parse_reply_from_raw_and_datagram_sockets() -> None:
    reply = struct.pack("!BBHHH", icmp.ECHO_REPLY, 0, 0, 0xBEEF, 42) + b"x" * 8
    ip_header = bytes([0x45]) + b"\0" * 19
    assert icmp.parse_icmp(reply, raw=False) == icmp.IcmpMessage(0, 0, 0xBEEF, 42)
    assert icmp.parse_icmp(ip_header + reply, raw=True) == icmp.IcmpMessage(0, 0, 0xBEEF, 42)
    # Our own echo request seen by a raw socket on loopback is not a reply.
    assert icmp.parse_icmp(ip_header + icmp.echo_request(1, 2), raw=True) is None
    assert icmp.parse_icmp(b"\0\0", raw=False) is None


def test_parse_unreachable_quoting_our_echo() -> None:
    quoted = bytes([0x45]) + b"\0" * 19 + icmp.echo_request(0xAAAA, 9)[:8]
    error = struct.pack("!BBHI", icmp.DEST_UNREACHABLE, 1, 0, 0) + quoted
    assert icmp.parse_icmp(error, raw=False) == icmp.IcmpMessage(icmp.DEST_UNREACHABLE, 1, 0xAAAA, 9)


@needs_icmp
def test_echo_to_loopback_gets_every_reply() -> None:
    result = _run(_target())
    assert result.success
    assert (result.sent, result.received) == (4, 4)
    assert result.rtt_min is not None
    assert result.rtt_max is not None
    assert result.rtt_avg is not None
    assert 0 < result.rtt_min <= result.rtt_avg <= result.rtt_max < 0.5
    assert all(r is not None for r in result.rtts)


@needs_icmp
def test_bound_to_loopback_interface() -> None:
    result = _run(_target(interface="lo", count=1))
    assert result.success


@needs_icmp
def test_unknown_interface_is_a_reason_not_an_exception() -> None:
    result = _run(_target(interface="nosuchif0", count=1))
    assert (result.success, result.reason) == (False, "no_interface")


def test_name_that_does_not_resolve() -> None:
    result = _run(_target(host="no-such-host.invalid", count=1))
    assert (result.success, result.reason) == (False, "resolve")


@pytest.mark.lab
@pytest.mark.parametrize(("group_range", "raw"), [("0 2147483647", False), ("1 0", True)])
def test_both_socket_kinds_reach_loopback(netns_probe: NetnsProbe, group_range: str, raw: bool) -> None:
    target = {
        "name": "lo",
        "role": "router",
        "kind": "icmp",
        "host": "127.0.0.1",
        "count": 3,
        "spacing": 0.01,
    }
    result = netns_probe(target, [], group_range)
    assert result["raw"] is raw
    assert result["success"] is True
    assert (result["sent"], result["received"]) == (3, 3)
    assert result["jitter"] is not None


@pytest.mark.lab
@pytest.mark.parametrize("group_range", ["0 2147483647", "1 0"])
def test_unused_address_is_total_loss(netns_probe: NetnsProbe, group_range: str) -> None:
    # Packets to 10.8.0.0/24 leave through lo and are dropped: nobody ever answers.
    target = {
        "name": "gone",
        "role": "router",
        "kind": "icmp",
        "host": "10.8.0.7",
        "count": 3,
        "spacing": 0.01,
        "timeout": 0.3,
    }
    result = netns_probe(target, ["ip route add 10.8.0.0/24 dev lo"], group_range)
    assert result["success"] is False
    assert result["reason"] == "timeout"
    assert (result["sent"], result["received"]) == (3, 0)
    assert result["rtts"] == [None, None, None]


@pytest.mark.lab
def test_no_route_and_unreachable_routes(netns_probe: NetnsProbe) -> None:
    target = {"name": "x", "role": "router", "kind": "icmp", "host": "10.3.0.1", "count": 2, "timeout": 0.3}
    assert netns_probe(target, [], "0 2147483647")["reason"] == "no_route"
    routed = netns_probe(target, ["ip route add unreachable 10.3.0.0/16"], "0 2147483647")
    assert (routed["success"], routed["reason"]) == (False, "unreachable")


@pytest.mark.lab
@pytest.mark.parametrize("group_range", ["0 2147483647", "1 0"])
def test_every_other_reply_dropped_is_half_loss(netns_probe: NetnsProbe, group_range: str) -> None:
    drop_every_other_reply = (
        "nft add table ip t && "
        "nft add chain ip t in '{ type filter hook input priority 0; }' && "
        "nft add rule ip t in icmp type echo-reply numgen inc mod 2 == 1 drop"
    )
    target = {
        "name": "lo",
        "role": "router",
        "kind": "icmp",
        "host": "127.0.0.1",
        "count": 6,
        "spacing": 0.01,
        "timeout": 0.3,
    }
    result = netns_probe(target, [drop_every_other_reply], group_range)
    assert result["success"] is True
    assert (result["sent"], result["received"]) == (6, 3)
    got = [r is not None for r in result["rtts"]]
    assert got == [True, False, True, False, True, False]


def _reply(ident: int, seq: int) -> bytes:
    """An echo reply as a raw socket reads it: an IPv4 header, then ICMP."""
    return bytes([0x45]) + b"\0" * 19 + struct.pack("!BBHHH", icmp.ECHO_REPLY, 0, 0, ident, seq) + b"x" * 8


def _unreachable(ident: int, seq: int) -> bytes:
    quoted = bytes([0x45]) + b"\0" * 19 + icmp.echo_request(ident, seq)[:8]
    return bytes([0x45]) + b"\0" * 19 + struct.pack("!BBHI", icmp.DEST_UNREACHABLE, 1, 0, 0) + quoted


def _replay(ledger: icmp.EchoLedger, received: list[tuple[bytes, str]]) -> None:
    """Feed a recorded round to the ledger the way the probe's reader does."""
    for index in range(ledger.count):
        ledger.sent.add(ledger.seq(index))
    for rtt_ms, (data, source) in enumerate(received, start=1):
        message = icmp.parse_icmp(data, raw=ledger.raw)
        if message is not None and ledger.ours(message, source) and message.type == icmp.ECHO_REPLY:
            ledger.answer(message.seq, rtt_ms / 1000)


def test_loss_counts_each_echo_of_the_round_once_from_the_target() -> None:
    """What the probe reports as received and lost, from a recorded round (no root needed)."""
    target, ident = "10.0.0.1", 0xBEEF
    ledger = icmp.EchoLedger(target, ident, raw=True, first_seq=0xFFFD, count=6)  # wraps after 3
    _replay(
        ledger,
        [
            (_reply(ident, 0xFFFD), target),
            (_reply(ident, 0xFFFD), target),  # a duplicate (a looping or duplicating link)
            (_reply(ident, 0xFFFE), "10.0.0.9"),  # someone else's reply with our numbers
            (_reply(0x1111, 0xFFFF), target),  # another ping on this host (a raw socket sees all)
            (_reply(ident, 3), target),  # an echo this round never sent
            (_reply(ident, 0), target),  # after the wrap
            (_unreachable(ident, 1), "192.168.1.1"),  # an error is no reply
            (b"\x45" + b"\0" * 10, target),  # truncated
            (_reply(ident, 2), target),
        ],
    )
    result = ledger.result("", "no reply", "raw")
    assert (result.sent, result.received) == (6, 3)
    assert result.loss == 0.5
    assert [rtt is not None for rtt in result.rtts] == [True, False, False, True, False, True]
    assert result.success
    assert result.rtt_min == 0.001


def test_a_datagram_socket_ignores_the_id_the_kernel_rewrote() -> None:
    ledger = icmp.EchoLedger("10.0.0.1", 0xBEEF, raw=False, first_seq=10, count=2)
    reply = struct.pack("!BBHHH", icmp.ECHO_REPLY, 0, 0, 0x0042, 10) + b"x" * 8
    _replay(ledger, [(reply, "10.0.0.1")])
    result = ledger.result("", "no reply", "datagram")
    assert (result.sent, result.received, result.loss) == (2, 1, 0.5)


def test_a_round_without_replies_is_total_loss_with_the_first_error() -> None:
    ledger = icmp.EchoLedger("10.0.0.1", 1, raw=True, first_seq=0, count=4)
    _replay(ledger, [(_unreachable(1, 0), "192.168.1.1")])
    result = ledger.result("unreachable", "ICMP from 192.168.1.1", "raw")
    assert not result.success
    assert (result.reason, result.sent, result.received, result.loss) == ("unreachable", 4, 0, 1.0)
