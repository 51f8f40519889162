"""Forensics: when a layer first degrades or fails, one traceroute to the VPN concentrator and CAD.

IT then sees where the path broke. The trace runs in a short-lived child process
(``python -m lifeline_agent.forensics DEST…``) that imports scapy inside :func:`traceroute`: scapy
costs ~1.5 s and ~50 MB to import, so it never loads into the agent. Hops keep the address and the
RTT only. Rate-limited to one trace per layer episode (a layer leaving "ok" until it returns) and
at most one per ``min_gap`` seconds. Needs CAP_NET_RAW; without it the agent says so once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lifeline_agent.clock import Clock, SystemClock
from lifeline_agent.config import Target
from lifeline_agent.recorder import EventAttr, Recorder

log = logging.getLogger(__name__)

# The layers a packet crosses on its way to CAD; power and the backup path are not traced.
TRACED_LAYERS = ("link", "router", "internet", "vpn", "agency", "dns", "cad")
DEFAULT_MAX_HOPS = 16
DEFAULT_TIMEOUT = 2.0
DEFAULT_MIN_GAP = 60.0
CHILD_GRACE = 10.0  # import and start-up of the child on top of the probes' own timeouts


@dataclass(frozen=True, slots=True)
class Hop:
    ttl: int
    address: str  # "" when nothing answered at this TTL
    rtt: float | None  # seconds


@dataclass(frozen=True, slots=True)
class Trace:
    destination: str
    address: str = ""  # the destination's IPv4 address
    hops: tuple[Hop, ...] = ()
    reached: bool = False
    error: str = ""

    def attributes(self, **extra: EventAttr) -> dict[str, EventAttr]:
        """Flat event attributes: ``hop_3`` is the address (``*`` for silence), ``hop_3_ms`` its RTT."""
        out: dict[str, EventAttr] = {
            **extra,
            "destination": self.destination,
            "address": self.address,
            "reached": self.reached,
            "hops": len(self.hops),
        }
        if self.error:
            out["error"] = self.error
        for hop in self.hops:
            out[f"hop_{hop.ttl}"] = hop.address or "*"
            if hop.rtt is not None:
                out[f"hop_{hop.ttl}_ms"] = round(hop.rtt * 1000, 3)
        return out


def availability() -> tuple[bool, str]:
    """(True, "") when scapy is installed and raw sockets are allowed, else (False, why)."""
    if importlib.util.find_spec("scapy") is None:
        return False, "scapy is not installed"
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return False, "needs CAP_NET_RAW (raw sockets)"
    except OSError as exc:
        return False, f"raw socket: {exc.strerror}"
    probe.close()
    return True, ""


def hops_from_answers(
    answers: Iterable[tuple[int, str, float | None, bool]], max_hops: int
) -> tuple[tuple[Hop, ...], bool]:
    """(ttl, source, rtt, is_echo_reply) answers → hops up to the destination, and whether it was reached."""
    by_ttl = {ttl: (source, rtt, final) for ttl, source, rtt, final in answers}
    hops: list[Hop] = []
    for ttl in range(1, max_hops + 1):
        source, rtt, final = by_ttl.get(ttl, ("", None, False))
        hops.append(Hop(ttl, source, rtt))
        if final:
            return tuple(hops), True
    # Drop the silent tail: the last answering hop is where the path broke.
    while hops and not hops[-1].address:
        hops.pop()
    return tuple(hops), False


def traceroute(destination: str, max_hops: int = DEFAULT_MAX_HOPS, timeout: float = DEFAULT_TIMEOUT) -> Trace:
    """ICMP echo with TTL 1..max_hops, all sent at once; needs CAP_NET_RAW. Imports scapy here."""
    try:
        address = socket.gethostbyname(destination)
    except (OSError, UnicodeError):
        return Trace(destination, error="does not resolve")
    from scapy.config import conf
    from scapy.layers.inet import ICMP, IP
    from scapy.sendrecv import sr
    from scapy.supersocket import L3RawSocket

    conf.verb = 0
    # Kernel routing (tunnels, loopback, policy rules) instead of scapy's own copy of the table.
    conf.L3socket = L3RawSocket
    ident = os.getpid() & 0xFFFF
    probes = IP(dst=address, ttl=(1, max_hops)) / ICMP(id=ident)
    try:
        answered, _unanswered = sr(probes, timeout=timeout, verbose=0)
    except OSError as exc:
        return Trace(destination, address, error=f"send: {exc.strerror or exc}")
    found: list[tuple[int, str, float | None, bool]] = []
    for pair in answered:
        sent: Any = pair[0]
        received: Any = pair[1]
        icmp: Any = received.getlayer(ICMP)
        final = icmp is not None and int(icmp.type) == 0 and received.src == address
        found.append((int(sent.ttl), str(received.src), float(received.time) - float(sent.sent_time), final))
    hops, reached = hops_from_answers(found, max_hops)
    return Trace(destination, address, hops, reached)


def _trace_from_json(data: dict[str, Any]) -> Trace:
    hops = tuple(Hop(int(h["ttl"]), str(h["address"]), h["rtt"]) for h in data.get("hops", []))
    return Trace(
        str(data["destination"]),
        str(data.get("address", "")),
        hops,
        bool(data.get("reached")),
        str(data.get("error", "")),
    )


async def trace_in_child(
    destinations: Sequence[str], max_hops: int = DEFAULT_MAX_HOPS, timeout: float = DEFAULT_TIMEOUT
) -> list[Trace]:
    """Run :func:`traceroute` for each destination in a child process (scapy stays out of the agent)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lifeline_agent.forensics",
        "--max-hops",
        str(max_hops),
        "--timeout",
        str(timeout),
        *destinations,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err, finished = b"", b"", False
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout * len(destinations) + CHILD_GRACE)
        finished = True
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:  # timed out or cancelled: end our own child, by its handle
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if not finished:
        return [Trace(d, error="traceroute did not finish in time") for d in destinations]
    if proc.returncode != 0:
        reason = (err.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return [Trace(d, error=f"traceroute failed: {reason[:200]}") for d in destinations]
    return [_trace_from_json(item) for item in json.loads(out)]


Runner = Callable[[Sequence[str]], Any]  # async: destinations → list[Trace]
Emit = Callable[[Trace, str], None]  # (trace, the layer that triggered it)


@dataclass
class Forensics:
    """Decides when to trace, runs one trace at a time off the event loop, and hands results on."""

    emit: Emit
    enabled: bool = True
    clock: Clock = field(default_factory=SystemClock)
    min_gap: float = DEFAULT_MIN_GAP
    max_hops: int = DEFAULT_MAX_HOPS
    timeout: float = DEFAULT_TIMEOUT
    runner: Runner | None = None
    available: bool = False
    reason: str = ""
    _episodes: set[str] = field(default_factory=set)
    _last_start: float | None = None
    _task: asyncio.Task[None] | None = None

    def check(self) -> tuple[bool, str]:
        """Probe the privilege once (at start); the answer is kept in ``available``/``reason``."""
        if not self.enabled:
            self.available, self.reason = False, "off in [providers]"
        else:
            self.available, self.reason = availability()
        return self.available, self.reason

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def on_layer(self, layer: str, state: str, destinations: Sequence[str]) -> bool:
        """Feed every layer state change; returns True when it started a trace."""
        if layer not in TRACED_LAYERS:
            return False
        if state == "ok":
            self._episodes.discard(layer)
            return False
        if state not in ("degraded", "failed") or layer in self._episodes:
            return False
        self._episodes.add(layer)
        if not self.available or not destinations or self.busy:
            return False
        now = self.clock.monotonic()
        if self._last_start is not None and now - self._last_start < self.min_gap:
            log.debug("traceroute for %s skipped: one ran %.0fs ago", layer, now - self._last_start)
            return False
        self._last_start = now
        self._task = asyncio.get_running_loop().create_task(self._run(layer, tuple(destinations)))
        return True

    async def _run(self, layer: str, destinations: tuple[str, ...]) -> None:
        log.info("layer %s left ok: traceroute to %s", layer, ", ".join(destinations))
        runner = self.runner or (lambda d: trace_in_child(d, self.max_hops, self.timeout))
        traces: list[Trace] = await runner(destinations)
        for trace in traces:
            self.emit(trace, layer)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def trace_destinations(vpn_endpoints: Sequence[str], targets: Iterable[Target]) -> list[str]:
    """The VPN concentrators and the CAD hosts: where a traceroute shows the break."""
    cad = [t.host for t in targets if t.role == "cad" and t.host]
    return list(dict.fromkeys([*vpn_endpoints, *cad]))


def report_trace(recorder: Recorder, trace: Trace, layer: str, vpn_endpoints: Sequence[str]) -> None:
    """A finished trace as an event (``forensics.traceroute``) and one log line with its path."""
    kind = "vpn" if trace.destination in vpn_endpoints else "cad"
    recorder.event("forensics.traceroute", trace.attributes(layer=layer, toward=kind))
    path = " ".join(h.address or "*" for h in trace.hops)
    log.info(
        "traceroute to %s (%s): %s%s",
        trace.destination,
        kind,
        path or "no hop answered",
        f" — {trace.error}" if trace.error else ("" if trace.reached else " — destination not reached"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifeline_agent.forensics", description=__doc__)
    parser.add_argument("destinations", nargs="+")
    parser.add_argument("--max-hops", type=int, default=DEFAULT_MAX_HOPS)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    ok, reason = availability()
    if not ok:
        print(f"traceroute unavailable: {reason}", file=sys.stderr)
        return 3
    traces = [traceroute(d, args.max_hops, args.timeout) for d in args.destinations]
    print(json.dumps([asdict(t) for t in traces]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
