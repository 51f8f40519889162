"""Heartbeats in the home-network lab (real WireGuard): they reach the collector through the
tunnel, and with the tunnel and the home uplink blackholed they keep coming over the hotspot.

The collector runs on the VPN concentrator, listening on every address (HTTP and, on the same
port number, UDP heartbeats); the agent in the laptop namespace knows its internal endpoint
(through the tunnel) and its public one (allowed), and discovers the hotspot's ``usb0`` as its
backup interface. Which path beats took is read from the collector's
``lifeline_collector_heartbeat_paths_total{path}``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent" / "delivery"))

from delivery_procs import Collector, Proc, agent_config, agent_proc, wait_for

from lifeline_lab import impair
from lifeline_lab.layout import ADDR, CAD_PORT
from lifeline_lab.topology import Lab

pytestmark = [pytest.mark.lab, pytest.mark.system, pytest.mark.slow]

PORT = 8480
INTERNAL = f"http://{ADDR.vpnhub_lan}:{PORT}"
PUBLIC = f"http://{ADDR.vpnhub_public}:{PORT}"
_PATHS = re.compile(r'^lifeline_collector_heartbeat_paths_total\{path="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


@dataclass
class Setup:
    lab: Lab
    collector: Collector
    agent: Proc


@pytest.fixture(scope="module")
def setup(cad_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("heartbeat-paths")
    hub = ("ip", "netns", "exec", cad_lab.ns("vpnhub"))
    collector = Collector(work / "collector", f"0.0.0.0:{PORT}", prefix=hub)
    token = collector.register()
    collector.start()
    config = agent_config(
        work / "agent",
        token,
        [INTERNAL, {"url": PUBLIC, "public": True}],
        [{"name": "cad", "role": "cad", "kind": "tcp", "host": ADDR.cad_server, "port": CAD_PORT,
          "interval": "500ms", "timeout": "400ms", "path": "tunnel"}],
        collector_options={"allow_public": True},
    )  # fmt: skip
    agent = agent_proc(config, prefix=("ip", "netns", "exec", cad_lab.ns("laptop")))
    try:
        wait_for(
            "the collector to listen",
            lambda: bool(cad_lab.exec("vpnhub", ["ss", "-ulnH", f"sport = :{PORT}"]).stdout.strip()),
        )
        agent.start()
        yield Setup(cad_lab, collector, agent)
    finally:
        agent.stop()
        collector.stop()
        impair.clear(cad_lab)


def beats(setup: Setup) -> dict[str, float]:
    """Valid beats the collector has taken, by path (read inside the concentrator's namespace)."""
    done = setup.lab.exec(
        "vpnhub", ["curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{PORT}/metrics"], check=False
    )
    return {path: float(count) for path, count in _PATHS.findall(done.stdout)}


def grows(setup: Setup, path: str, by: float = 4) -> None:
    """Wait until beats over ``path`` have grown by ``by`` from now (AssertionError if they do not)."""
    start = beats(setup).get(path, 0.0)
    wait_for(f"{by:g} more beats over {path}", lambda: beats(setup).get(path, 0.0) >= start + by, 30)


def test_beats_arrive_through_the_tunnel(setup: Setup) -> None:
    wait_for("beats through the tunnel", lambda: beats(setup).get("tunnel", 0.0) >= 8, 60)
    grows(setup, "tunnel")
    assert "heartbeats to" in setup.agent.text()


def test_with_tunnel_and_uplink_blackholed_beats_come_over_the_hotspot(setup: Setup) -> None:
    lab = setup.lab
    wait_for("beats through the tunnel", lambda: beats(setup).get("tunnel", 0.0) >= 8, 60)
    impair.apply(lab, impair.make("blackhole", "tunnel", "both"))
    impair.apply(lab, impair.make("blackhole", "primary", "both"))
    try:
        grows(setup, "backup", by=6)
        # Nothing comes through the tunnel any more (a beat in flight at the cut aside).
        before = beats(setup).get("tunnel", 0.0)
        grows(setup, "backup", by=4)
        assert beats(setup).get("tunnel", 0.0) <= before + 1
        print(f"beats by path with the tunnel and the uplink blackholed: {beats(setup)}")
    finally:
        impair.clear(lab)
    grows(setup, "tunnel")
