"""Forensics: a real traceroute (as root), unavailable without CAP_NET_RAW, once per layer episode."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import pytest

from lifeline_agent.forensics import Forensics, Hop, Trace, hops_from_answers, trace_in_child

ROOT = os.geteuid() == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now


def test_hops_stop_at_the_destination_and_drop_the_silent_tail() -> None:
    answers = [(1, "192.168.1.1", 0.001, False), (3, "10.0.0.9", 0.02, False), (4, "10.20.0.10", 0.03, True)]
    hops, reached = hops_from_answers(answers, 8)
    assert reached
    assert [h.address for h in hops] == ["192.168.1.1", "", "10.0.0.9", "10.20.0.10"]
    hops, reached = hops_from_answers(answers[:2], 8)
    assert not reached
    assert hops[-1] == Hop(3, "10.0.0.9", 0.02)  # where the path broke


def test_trace_attributes_are_flat_and_carry_address_and_rtt_only() -> None:
    trace = Trace("cad.agency.internal", "10.20.0.10", (Hop(1, "192.168.1.1", 0.0012), Hop(2, "", None)))
    attrs = trace.attributes(layer="cad", toward="cad")
    assert attrs["hop_1"] == "192.168.1.1"
    assert attrs["hop_1_ms"] == 1.2
    assert attrs["hop_2"] == "*"
    assert "hop_2_ms" not in attrs
    assert (attrs["reached"], attrs["hops"], attrs["layer"]) == (False, 2, "cad")
    assert all(isinstance(v, str | int | float | bool) for v in attrs.values())


def test_one_trace_per_layer_episode_and_at_most_one_per_gap() -> None:
    clock = FakeClock()
    calls: list[tuple[str, ...]] = []
    emitted: list[tuple[str, str]] = []

    async def runner(destinations: Sequence[str]) -> list[Trace]:
        calls.append(tuple(destinations))
        return [Trace(d, d, (Hop(1, d, 0.001),), True) for d in destinations]

    async def main() -> None:
        f = Forensics(lambda t, layer: emitted.append((t.destination, layer)), clock=clock, runner=runner)
        f.available = True
        dest = ["203.0.113.10", "10.20.0.10"]
        assert f.on_layer("cad", "degraded", dest)
        await asyncio.sleep(0)
        assert not f.on_layer("cad", "failed", dest)  # same episode: degraded → failed
        clock.now += 120
        assert not f.on_layer("power", "failed", dest)  # not on the way to CAD
        assert f.on_layer("vpn", "failed", dest)  # a new layer's episode, past the gap
        await asyncio.sleep(0)
        clock.now += 10
        assert not f.on_layer("router", "failed", dest)  # within a minute of the last trace
        f.on_layer("cad", "ok", dest)  # the episode ends …
        clock.now += 120
        assert f.on_layer("cad", "degraded", dest)  # … so a new one traces again
        await asyncio.sleep(0)
        await f.aclose()

    asyncio.run(main())
    assert len(calls) == 3
    assert emitted[:2] == [("203.0.113.10", "cad"), ("10.20.0.10", "cad")]


def test_an_unavailable_forensics_never_traces() -> None:
    async def runner(destinations: Sequence[str]) -> list[Trace]:
        raise AssertionError("must not run")

    async def main() -> None:
        f = Forensics(lambda t, layer: None, enabled=False, runner=runner)
        assert f.check() == (False, "off in [providers]")
        assert not f.on_layer("cad", "failed", ["10.20.0.10"])

    asyncio.run(main())


@pytest.mark.system
@pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_without_cap_net_raw_it_reports_itself_unavailable() -> None:
    # Root without CAP_NET_RAW in the bounding set: the agent as systemd would run it, minus the cap.
    script = (
        "import json; from lifeline_agent.forensics import availability; print(json.dumps(availability()))"
    )
    proc = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(proc.stdout) == [False, "needs CAP_NET_RAW (raw sockets)"]
    child = subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-net_raw",
            sys.executable,
            "-m",
            "lifeline_agent.forensics",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 3
    assert "needs CAP_NET_RAW" in child.stderr


@pytest.mark.system
@pytest.mark.skipif(not ROOT, reason="traceroute needs CAP_NET_RAW")
def test_traceroute_in_a_child_process_reaches_loopback() -> None:
    traces = asyncio.run(trace_in_child(["127.0.0.1", "nosuch.invalid"], max_hops=4, timeout=1.0))
    loopback, unknown = traces
    assert loopback.reached
    assert loopback.hops[0].address == "127.0.0.1"
    assert loopback.hops[0].rtt is not None
    assert loopback.hops[0].rtt >= 0
    assert (unknown.reached, unknown.error) == (False, "does not resolve")
    assert "scapy" not in sys.modules  # the agent process never loads scapy
