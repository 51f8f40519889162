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
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    bind_to_device,
    reason_for_errno,
    register,
    resolve,
)


async def run(target: Target, ctx: ProbeContext) -> ProbeResult:
    resolved = await resolve(target.host, socket.AF_UNSPEC, target.port)
    if resolved is None:
        return ProbeResult(False, "resolve", sent=1, rtts=(None,), detail=f"{target.host!r} does not resolve")
    family, sockaddr = resolved
    sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.setblocking(False)
        try:
            bind_to_device(sock, target.interface)
        except OSError as exc:
            return ProbeResult(
                False, reason_for_errno(exc.errno), sent=1, rtts=(None,), detail=f"bind: {exc.strerror}"
            )
        loop = asyncio.get_running_loop()
        timeout = min(target.timeout, ctx.remaining())
        ctx.logger.debug("tcp connect", extra={"address": sockaddr[0], "port": sockaddr[1]})
        started = time.monotonic()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout=timeout)
        except TimeoutError:
            return ProbeResult(
                False, "timeout", sent=1, rtts=(None,), detail=f"no answer within {timeout:g}s"
            )
        except OSError as exc:
            return ProbeResult(
                False, reason_for_errno(exc.errno), sent=1, rtts=(None,), detail=f"connect: {exc.strerror}"
            )
        rtt = time.monotonic() - started
    return ProbeResult(
        True,
        rtt_min=rtt,
        rtt_avg=rtt,
        rtt_max=rtt,
        sent=1,
        received=1,
        rtts=(rtt,),
        detail=f"connected to {sockaddr[0]}:{sockaddr[1]}",
    )


SPEC = register(
    ProbeSpec(
        kind="tcp",
        run=run,
        metrics=(
            "lifeline_probe_success",
            "lifeline_probe_duration_seconds",
            "lifeline_probe_rtt_seconds",
            "lifeline_probe_jitter_seconds",
            "lifeline_probe_loss_ratio",
            "lifeline_probe_packets_sent_total",
            "lifeline_probe_packets_received_total",
            "lifeline_probe_consecutive_failures",
        ),
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
