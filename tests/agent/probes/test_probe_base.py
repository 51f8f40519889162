"""What the probes share: address literals skip the resolver's thread, one socket set-up, one-packet results."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from lifeline_agent.probes import REGISTRY
from lifeline_agent.probes.base import (
    ROUND_METRICS,
    answered_round,
    failed_round,
    numeric_address,
    probe_socket,
    resolve,
)

T = TypeVar("T")


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting the jobs handed to its threads (getaddrinfo is one)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


def resolve_counting(host: str, family: int, port: int = 0) -> tuple[Any, int]:
    async def main() -> tuple[Any, int]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        return await resolve(host, family, port), executor.jobs

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("host", "family", "expected"),
    [
        ("192.0.2.7", socket.AF_INET, (socket.AF_INET, ("192.0.2.7", 443))),
        ("192.0.2.7", socket.AF_UNSPEC, (socket.AF_INET, ("192.0.2.7", 443))),
        ("2001:db8::7", socket.AF_UNSPEC, (socket.AF_INET6, ("2001:db8::7", 443))),
    ],
)
def test_an_address_literal_is_taken_without_a_thread(
    host: str, family: int, expected: tuple[int, tuple[str, int]]
) -> None:
    assert resolve_counting(host, family, 443) == (expected, 0)


def test_a_name_still_goes_to_the_resolver() -> None:
    resolved, jobs = resolve_counting("localhost", socket.AF_INET, 80)
    assert resolved == (socket.AF_INET, ("127.0.0.1", 80))
    assert jobs == 1


def test_a_literal_of_the_wrong_family_does_not_resolve() -> None:
    assert numeric_address("2001:db8::7", socket.AF_INET) is None
    assert resolve_counting("2001:db8::7", socket.AF_INET)[0] is None
    # Not strict dotted quads: left to getaddrinfo, as before.
    assert numeric_address("127.1", socket.AF_INET) is None
    assert numeric_address("cad.agency.example", socket.AF_UNSPEC) is None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_probe_socket_is_non_blocking_bound_and_has_its_options() -> None:
    with probe_socket(
        socket.AF_INET,
        socket.SOCK_DGRAM,
        interface="lo",
        options=((socket.SOL_SOCKET, socket.SO_RCVBUF, 65536),),
    ) as sock:
        assert sock.getblocking() is False
        bound = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
        assert bound.rstrip(b"\0") == b"lo"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536


def test_probe_socket_for_an_unknown_interface_raises_and_closes_it() -> None:
    before = open_fds()
    with pytest.raises(OSError, match="No such device") as caught:
        probe_socket(socket.AF_INET, socket.SOCK_STREAM, interface="nosuchif0")
    assert caught.value.errno == errno.ENODEV
    assert open_fds() == before


def test_one_packet_rounds() -> None:
    lost = failed_round("timeout", "no answer within 1s")
    assert (lost.success, lost.reason, lost.sent, lost.received, lost.rtts, lost.loss) == (
        False,
        "timeout",
        1,
        0,
        (None,),
        1.0,
    )
    assert lost.rtt_avg is None
    ok = answered_round(0.012, "connected")
    assert (ok.success, ok.reason, ok.received, ok.rtts, ok.rtt_min, ok.rtt_max) == (
        True,
        "",
        1,
        (0.012,),
        0.012,
        0.012,
    )
    # An answer that is wrong (dns: no expected address) is a failed round with a real round trip.
    wrong = answered_round(0.02, "answer []", "mismatch")
    assert (wrong.success, wrong.reason, wrong.received, wrong.rtt_avg, wrong.loss) == (
        False,
        "mismatch",
        1,
        0.02,
        0.0,
    )


def test_every_probe_declares_the_round_metrics_first() -> None:
    assert {"icmp", "tcp", "dns"} <= set(REGISTRY)
    for spec in REGISTRY.values():
        assert spec.metrics[: len(ROUND_METRICS)] == ROUND_METRICS, spec.kind
    assert REGISTRY["icmp"].metrics[len(ROUND_METRICS) :] == ("lifeline_probe_mos",)
