"""TCP connect probe against real loopback sockets: connected, refused, timeout, bad interface."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys

import pytest

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import Target
from lifeline_agent.logs import bind
from lifeline_agent.probes import ProbeContext, ProbeResult, tcp


def _target(host: str, port: int, **overrides: object) -> Target:
    values: dict[str, object] = {
        "name": "cad",
        "role": "cad",
        "kind": "tcp",
        "host": host,
        "port": port,
        "timeout": 0.5,
    }
    values.update(overrides)
    return Target(**values)  # type: ignore[arg-type]


def _run(target: Target) -> ProbeResult:
    clock = SystemClock()
    ctx = ProbeContext(bind(logging.getLogger("test"), probe="tcp"), clock.monotonic() + 5.0, clock)
    return asyncio.run(tcp.run(target, ctx))


def test_connect_to_listener(tcp_listener: tuple[str, int]) -> None:
    result = _run(_target(*tcp_listener))
    assert result.success
    assert (result.sent, result.received) == (1, 1)
    assert result.rtt_avg is not None
    assert 0 < result.rtt_avg < 0.5
    assert result.rtts == (result.rtt_avg,)


def test_closed_port_is_refused(closed_port: int) -> None:
    result = _run(_target("127.0.0.1", closed_port))
    assert (result.success, result.reason, result.sent, result.received) == (False, "refused", 1, 0)
    assert result.rtt_avg is None


def test_bound_to_loopback(tcp_listener: tuple[str, int]) -> None:
    assert _run(_target(*tcp_listener, interface="lo")).success


def test_unknown_interface(tcp_listener: tuple[str, int]) -> None:
    result = _run(_target(*tcp_listener, interface="nosuchif0"))
    assert (result.success, result.reason) == (False, "no_interface")


def test_unresolvable_host() -> None:
    result = _run(_target("no-such-host.invalid", 443))
    assert (result.success, result.reason) == (False, "resolve")


_IN_NETNS = """
import asyncio, logging, sys
from lifeline_agent.clock import SystemClock
from lifeline_agent.config import Target
from lifeline_agent.logs import bind
from lifeline_agent.probes import ProbeContext, tcp
clock = SystemClock()
ctx = ProbeContext(bind(logging.getLogger("t")), clock.monotonic() + 5, clock)
target = Target(name="cad", role="cad", kind="tcp", host=sys.argv[1], port=443, timeout=0.3)
print(asyncio.run(tcp.run(target, ctx)).reason)
"""


@pytest.mark.lab
@pytest.mark.parametrize(
    ("route", "host", "reason"),
    [
        ("ip route add 10.8.0.0/24 dev lo", "10.8.0.9", "timeout"),  # SYN vanishes
        ("ip route add unreachable 10.3.0.0/16", "10.3.0.9", "unreachable"),
        ("true", "10.4.0.9", "no_route"),
    ],
)
def test_timeout_and_unreachable_are_told_apart(route: str, host: str, reason: str) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    script = f'ip link set lo up && {route} && exec "$0" -c "$1" "$2"'
    proc = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, _IN_NETNS, host],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == reason
