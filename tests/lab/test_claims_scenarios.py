"""What a page claims is true: the layer, the backup state and the absence of a prediction.

The real agent (laptop namespace) and collector (the concentrator's box) watch shipped scenarios,
shortened where the claim shows early; the CAD simulator's own record says whether CAD was lost.

- The concentrator drops the tunnel's UDP (its public address still answers ping): the verdict is
  the VPN tunnel, whether the agent probes the concentrator inside the tunnel or at its public
  address — never the CAD server.
- Total cut (broadband and the hotspot's LTE blackholed): the hotspot reads "not ready" within a
  few seconds.
- The hotspot's LTE alone blackholed: "hotspot not ready" within a few seconds, a FailoverNotReady
  warning, no critical page; once restored it is ready again, without "losing packets".
- A steady 10 % loss each way for 60 s that CAD rides out: no critical page, no prediction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lifeline_lab import scenario
from lifeline_lab.layout import ADDR
from lifeline_lab.stack import LifelineStack, agent_targets
from lifeline_lab.testing import lab_fixture, lifeline_stack, repair_afterwards
from lifeline_lab.topology import Lab
from lifeline_lab.verdicts import cad_losses
from lifeline_lab.webhook import Notification

pytestmark = [pytest.mark.lab, pytest.mark.system, pytest.mark.slow]

claims_lab = lab_fixture(cadsim=True, tag="lc")
INTERVAL = 1.0
SETTLE = 5.0  # anything a scenario set off reaches the webhook within this
# "Within a few seconds": the backup path's probes held failed for the fail hold (2 s of rounds that
# time out), one evaluation and one status.json write later — generous, this is no benchmark.
FEW_SECONDS = 6.0


@pytest.fixture(scope="module")
def stack(claims_lab: Lab) -> Iterator[LifelineStack]:
    with lifeline_stack(claims_lab) as lifeline:
        yield lifeline


class Watch:
    """The agent's assessments (status.json, every 0.2 s) while a scenario plays, on the wall clock."""

    def __init__(self, stack: LifelineStack) -> None:
        self.stack = stack
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assessment-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            current = self.stack.assessment()
            if current is not None:
                self.seen.append((time.time(), current))

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [a for t, a in self.seen if start <= t <= end]

    def first(self, after: float, what: str, key: str, value: Any) -> float:
        """Seconds from ``after`` to the first assessment with ``key`` == ``value``."""
        for t, a in self.seen:
            if t >= after and a.get(key) == value:
                return t - after
        raise AssertionError(
            f"{what}: never seen after the cut; last: {self.seen[-1][1] if self.seen else None}"
        )


def play(stack: LifelineStack, timeline: dict[str, Any]) -> tuple[float, Watch]:
    """Play a timeline in real time while watching the agent; returns (wall start, the watch)."""
    sc = scenario.parse(timeline, "test_claims_scenarios", str(timeline["description"]))
    with Watch(stack) as watch:
        started = time.time()
        scenario.run(stack.lab, sc, emit=lambda _line: None)
    return started, watch


def pages(stack: LifelineStack, since: float) -> list[Notification]:
    return [n for n in stack.receiver.notifications(since=since, status="firing") if n.severity == "critical"]


def public_vpn_probe(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The concentrator probed at its public address (what discovery adds), not inside the tunnel."""
    out = []
    for t in targets:
        if t["name"] == "vpn":
            t = {**t, "name": "vpn-public", "host": ADDR.vpnhub_public, "path": "primary"}
        out.append(t)
    return out


@pytest.mark.parametrize("probed_at", ["tunnel", "public"])
def test_a_dropped_tunnel_is_the_vpn_whichever_address_is_probed(
    stack: LifelineStack, probed_at: str
) -> None:
    """vpn-concentrator-unreachable, shortened: UDP to the concentrator dropped from 3 s to 20 s."""
    targets = agent_targets(interval=INTERVAL)
    if probed_at == "public":
        targets = public_vpn_probe(targets)
    with repair_afterwards(stack):
        stack.start_agent(targets)
        stack.wait_healthy()
        started, watch = play(
            stack,
            {
                "description": "the concentrator drops the tunnel's UDP; its public address answers",
                "duration": "22s",
                "expect": {"cad_lost": True, "layer": "vpn", "page": True},
                "steps": [
                    {"at": "3s", "action": "vpn-block", "link": "hub"},
                    {"at": "20s", "action": "clear"},
                ],
            },
        )
        time.sleep(SETTLE)
    cut = started + 3.0
    assert cad_losses(stack.lab, started), "the tunnel is meant to cost the CAD session"
    during = watch.between(cut + 5.0, started + 20.0)
    assert during
    verdicts = {(a["verdict_layer"], a["verdict"]) for a in during}
    assert {layer for layer, _ in verdicts} == {"vpn"}, verdicts
    assert all(words.startswith("VPN tunnel") and "losing packets" not in words for _, words in verdicts), (
        verdicts
    )
    # Never the CAD server, at any moment of the outage.
    assert all(a["verdict_layer"] != "cad" for a in watch.between(cut, started + 20.0))
    layers = {n.labels.get("layer") for n in pages(stack, started) if n.name == "PositionLayerFailed"}
    assert layers <= {"vpn"}, layers


def test_a_total_cut_reads_hotspot_not_ready_within_seconds(stack: LifelineStack) -> None:
    """total-cut, shortened: broadband and the hotspot's LTE blackholed from 3 s to 15 s."""
    with repair_afterwards(stack):
        stack.start_agent(agent_targets(interval=INTERVAL))
        stack.wait_healthy()
        started, watch = play(
            stack,
            {
                "description": "total cut: broadband and LTE blackholed",
                "duration": "16s",
                "expect": {"cad_lost": True, "layer": "isp", "page": True},
                "steps": [
                    {"at": "3s", "action": "blackhole", "link": "broadband"},
                    {"at": "3s", "action": "blackhole", "link": "cellular"},
                    {"at": "15s", "action": "clear"},
                ],
            },
        )
    cut = started + 3.0
    assert watch.first(cut, "hotspot not ready", "backup_ready", False) <= FEW_SECONDS
    late = watch.between(cut + 4.0, started + 15.0)
    assert late
    assert all(a["backup_ready"] is False for a in late), {a["backup_ready"] for a in late}
    assert {a["backup_reason"] for a in late} <= {
        "hotspot not ready: hotspot has no internet",
        "backup path (hotspot) not ready",
    }


def test_the_hotspot_uplink_alone_down_warns_within_seconds_and_pages_nobody(stack: LifelineStack) -> None:
    """hotspot-uplink-down, shortened: the hotspot's LTE blackholed from 3 s to 28 s."""
    with repair_afterwards(stack):
        stack.start_agent(agent_targets(interval=INTERVAL))
        stack.wait_healthy()
        started, watch = play(
            stack,
            {
                "description": "the hotspot's LTE uplink goes dark; broadband fine",
                "duration": "48s",
                "expect": {"cad_lost": False, "layer": "backup", "page": False},
                "steps": [
                    {"at": "3s", "action": "blackhole", "link": "cellular"},
                    {"at": "28s", "action": "clear"},
                ],
            },
        )
        time.sleep(SETTLE)
    cut, back = started + 3.0, started + 28.0
    assert not cad_losses(stack.lab, started)
    assert watch.first(cut, "hotspot not ready", "backup_ready", False) <= FEW_SECONDS
    fired = stack.receiver.notifications(since=started, status="firing")
    assert pages(stack, started) == [], [(n.name, n.annotations.get("summary")) for n in fired]
    warnings = [n for n in fired if n.name == "FailoverNotReady"]
    assert warnings, [(n.name, n.severity) for n in fired]
    assert warnings[0].severity == "warning"
    assert warnings[0].at - cut <= 12.0, warnings[0].at - cut
    assert "hotspot not ready" in warnings[0].annotations["summary"], warnings[0].annotations["summary"]
    # Restored: ready again after the recovery hold, and no "losing packets" left over from the outage.
    assert watch.first(back, "hotspot ready again", "backup_ready", True) <= 15.0
    after = [a for a in watch.between(back + 15.0, started + 48.0) if a["backup_ready"] is True]
    assert after
    assert all("losing packets" not in a["backup_reason"] for a in after), {a["backup_reason"] for a in after}


def test_a_steady_10_percent_loss_is_no_critical_page(stack: LifelineStack) -> None:
    """steady-loss-10: 10 % each way on the home link for 60 s, which the CAD session rides out."""
    with repair_afterwards(stack):
        stack.start_agent(agent_targets(interval=INTERVAL))
        stack.wait_healthy()
        started, watch = play(
            stack,
            {
                "description": "steady 10 % loss each way on the home link",
                "duration": "64s",
                "expect": {"cad_lost": False, "layer": "link", "page": False},
                "steps": [
                    {"at": "3s", "action": "loss", "link": "primary", "direction": "both", "percent": 10},
                    {"at": "63s", "action": "clear"},
                ],
            },
        )
        time.sleep(SETTLE)
    if cad_losses(stack.lab, started):
        pytest.skip("the CAD simulator lost its session under 10 % loss: then a page would be right")
    fired = stack.receiver.notifications(since=started, status="firing")
    assert pages(stack, started) == [], [(n.name, n.annotations.get("summary")) for n in fired]
    assert [n for n in fired if n.name == "CadAtRisk"] == []
    assert all("rising" not in a["verdict"] for a in watch.between(started, started + 64.0))
