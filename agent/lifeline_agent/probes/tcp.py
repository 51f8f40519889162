"""TCP connect probe: how long the three-way handshake to host:port takes.

Tells ``refused`` (the host answered with RST), ``timeout`` (nothing answered) and
``unreachable``/``no_route`` (ICMP or the kernel said so) apart. No byte is sent after connect.
"""

from __future__ import annotations

import asyncio
import socket
import time

from lifeline_agent.config import Target
from lifeline_agent.probes.base import (
    ROUND_METRICS,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    answered_round,
    failed_round,
    probe_socket,
    reason_for_errno,
    register,
    resolve,
)


async def run(target: Target, ctx: ProbeContext) -> ProbeResult:
    resolved = await resolve(target.host, socket.AF_UNSPEC, target.port)
    if resolved is None:
        return failed_round("resolve", f"{target.host!r} does not resolve")
    family, sockaddr = resolved
    try:
        sock = probe_socket(family, socket.SOCK_STREAM, interface=target.interface)
    except OSError as exc:
        return failed_round(reason_for_errno(exc.errno), f"bind: {exc.strerror}")
    with sock:
        loop = asyncio.get_running_loop()
        timeout = min(target.timeout, ctx.remaining())
        ctx.logger.debug("tcp connect", extra={"address": sockaddr[0], "port": sockaddr[1]})
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, sockaddr)
        except TimeoutError:
            return failed_round("timeout", f"no answer within {timeout:g}s")
        except OSError as exc:
            return failed_round(reason_for_errno(exc.errno), f"connect: {exc.strerror}")
        rtt = time.monotonic() - started
    return answered_round(rtt, f"connected to {sockaddr[0]}:{sockaddr[1]}")


SPEC = register(
    ProbeSpec(
        kind="tcp",
        run=run,
        metrics=ROUND_METRICS,
        sample_config="""[[targets]]
name = "cad-server"
role = "cad"
kind = "tcp"
host = "cad.agency.example"
port = 443
timeout = "1s"
""",
    )
)
