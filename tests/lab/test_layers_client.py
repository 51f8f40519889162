"""Each layer broken in the lab, WireGuard on the laptop: break each layer, the verdict names that layer only.

One lab (with the CAD simulator) for the module; the real collector runs on the VPN concentrator's
box (``vpnhub``) and the real agent in the laptop namespace, a fresh agent process per test so no
recovery hold carries over. Probes run every 300 ms. Each test starts from a healthy verdict,
breaks one thing, waits for the verdict and checks it in status.json and at the collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lifeline_agent.health.layers import CAD_REFUSED
from lifeline_lab import impair
from lifeline_lab.layout import ADDR
from lifeline_lab.procs import wait_until
from lifeline_lab.stack import LifelineStack, agent_targets
from lifeline_lab.testing import break_layer, lab_fixture, lifeline_stack, repair_afterwards
from lifeline_lab.topology import Lab
from lifeline_lab.verdicts import BREAKS
from lifeline_wire.layers import CHAIN, FAILED_TEXT

pytestmark = [pytest.mark.lab, pytest.mark.system]

client_lab = lab_fixture(cadsim=True, tag="lc")
INTERVAL = 0.3


@pytest.fixture(scope="module")
def stack(client_lab: Lab) -> Iterator[LifelineStack]:
    with lifeline_stack(client_lab) as lifeline:
        yield lifeline


@pytest.fixture
def agent(stack: LifelineStack) -> Iterator[LifelineStack]:
    """A fresh agent, healthy before the test breaks anything; everything repaired afterwards."""
    with repair_afterwards(stack):
        stack.start_agent(agent_targets(interval=INTERVAL))
        stack.wait_healthy()
        yield stack


def states(assessment: dict[str, Any]) -> dict[str, str]:
    return {s["layer"]: s["state"] for s in assessment["layers"]}


# layer: the failed verdict's words (the link has its own test: the cable pull)
EXPECTED = {
    **{layer: FAILED_TEXT[layer] for layer in ("router", "internet", "vpn", "agency", "dns")},
    "cad": CAD_REFUSED,
    "power": "battery almost empty",
}


@pytest.mark.parametrize("layer", list(EXPECTED))
def test_breaking_a_layer_names_that_layer_and_no_other(agent: LifelineStack, layer: str) -> None:
    assert break_layer(agent, layer, EXPECTED[layer]) == []


def test_cable_pull_names_the_link_and_netlink_reports_it(agent: LifelineStack) -> None:
    pulled_ms = int(time.time() * 1000)
    BREAKS["link"](agent.lab)
    judged = agent.wait_assessment(lambda a: a["verdict_layer"] == "link", "the verdict link")
    assert judged["verdict"].startswith(FAILED_TEXT["link"])
    assert states(judged)["power"] == "ok"

    def pulled() -> list[tuple[int, dict[str, Any]]]:
        return [
            (ts, attrs)
            for ts, attrs in agent.events("link.changed", pulled_ms)
            if attrs.get("interface") == "eth0" and attrs.get("action") == "down"
        ]

    # The event travels to the collector over the hotspot (the primary has no carrier).
    wait_until(pulled, "the netlink link.changed event at the collector", timeout=30.0)
    ts, attrs = pulled()[0]
    assert attrs["carrier"] is False
    assert ts >= pulled_ms


def test_failover_ready_with_a_healthy_hotspot(agent: LifelineStack) -> None:
    healthy = agent.wait_assessment(lambda a: a["backup_ready"] is True, "backup ready")
    assert states(healthy)["backup"] == "ok"
    assert healthy["backup_rtt"] is not None
    wait_until(
        lambda: [v for _labels, _ts, v in agent.samples("lifeline_failover_ready")][-1:] == [1.0],
        "lifeline_failover_ready 1 at the collector",
        timeout=30.0,
    )


def test_failover_not_ready_with_the_hotspot_blackholed(agent: LifelineStack) -> None:
    since_ms = int(time.time() * 1000)
    BREAKS["backup"](agent.lab)
    judged = agent.wait_assessment(lambda a: a["backup_ready"] is False, "backup not ready")
    layers = states(judged)
    assert layers["backup"] == "failed"
    # The primary is fine all the way to CAD: the verdict is the backup, worded as such.
    assert {name: layers[name] for name in CHAIN} == dict.fromkeys(CHAIN, "ok")
    assert judged["verdict_layer"] == "backup"
    assert judged["verdict"].endswith("primary fine")
    wait_until(
        lambda: 0.0 in [v for _labels, _ts, v in agent.samples("lifeline_failover_ready", since_ms)],
        "lifeline_failover_ready 0 at the collector",
        timeout=30.0,
    )


def test_cad_routed_outside_the_tunnel_is_flagged(agent: LifelineStack) -> None:
    since_ms = int(time.time() * 1000)
    route = [f"{ADDR.cad_server}/32", "via", ADDR.router, "dev", "eth0"]
    agent.lab.exec("laptop", ["ip", "route", "add", *route])
    try:

        def misrouted() -> bool:
            cad = (agent.status().get("routes") or {}).get("cad") or []
            return any(c["target"] == "cad-tcp" and c["misrouted"] for c in cad)

        wait_until(misrouted, "cad-tcp flagged as mis-routed in status.json", timeout=30.0)
        cad = {c["target"]: c for c in agent.status()["routes"]["cad"]}
        assert cad["cad-tcp"]["interface"] == "eth0"
        assert cad["cad-tcp"]["via_tunnel"] is False
        wait_until(
            lambda: any(a.get("target") == "cad-tcp" for _ts, a in agent.events("route.misrouted", since_ms)),
            "the route.misrouted event at the collector",
            timeout=30.0,
        )
        wait_until(
            lambda: any(
                labels.get("target") == "cad-tcp" and value == 1.0
                for labels, _ts, value in agent.samples("lifeline_vpn_misrouted", since_ms)
            ),
            "lifeline_vpn_misrouted 1 at the collector",
            timeout=30.0,
        )
    finally:
        agent.lab.exec("laptop", ["ip", "route", "del", *route], check=False)
    # Back through the tunnel: the flag clears.
    wait_until(lambda: not misrouted(), "the mis-route flag to clear", timeout=30.0)


def test_tcp_info_of_the_cad_session_shows_retransmits_under_loss(agent: LifelineStack) -> None:
    def retransmits(since_ms: int = 0) -> list[float]:
        return [
            value
            for labels, _ts, value in agent.samples("lifeline_cad_session_retransmits_total", since_ms)
            if labels.get("target") == "cad-tcp"
        ]

    def session_up() -> bool:
        return any(
            labels.get("target") == "cad-tcp" and value >= 1
            for labels, _ts, value in agent.samples("lifeline_cad_session_up", start_ms)
        )

    start_ms = int(time.time() * 1000)
    # The CAD simulator's client holds an established session: the agent reads its TCP_INFO.
    wait_until(session_up, "the CAD session's TCP_INFO at the collector", timeout=30.0)
    wait_until(lambda: retransmits(start_ms), "a retransmit count", timeout=30.0)
    before = max(retransmits(start_ms))
    impair.apply(agent.lab, impair.make("loss", "primary", percent=40))
    lossy_ms = int(time.time() * 1000)
    wait_until(
        lambda: any(value > before for value in retransmits(lossy_ms)),
        "the CAD session's retransmits to rise under 40 % loss",
        timeout=40.0,
    )
