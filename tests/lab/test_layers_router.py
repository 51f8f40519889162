"""Each layer broken in the lab, the home-VPN-router variant: the laptop sees only its LAN.

WireGuard runs on the home router; the laptop has no tunnel interface, so the agent learns about
the tunnel only from what it reaches. With a probe of the concentrator's tunnel address
(10.99.0.1, reached through the router's tunnel) every layer is named as in the client variant;
without it the agent infers "VPN tunnel down (home VPN router)" from internet fine + agency side
gone. Same arrangement as ``test_layers_client.py``: one lab, the real collector on the VPN
concentrator's box, a fresh agent per test, probes every 300 ms.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifeline_agent.health.layers import CAD_REFUSED, VPN_INFERRED
from lifeline_lab.stack import LifelineStack, agent_targets
from lifeline_lab.testing import break_layer, lab_fixture, lifeline_stack, repair_afterwards
from lifeline_lab.topology import Lab
from lifeline_lab.verdicts import BREAKS, verdict_problems
from lifeline_wire.layers import FAILED_TEXT

pytestmark = [pytest.mark.lab, pytest.mark.system]

vpn_router_lab = lab_fixture(vpn="router", cadsim=True, tag="lr")
INTERVAL = 0.3


@pytest.fixture(scope="module")
def stack(vpn_router_lab: Lab) -> Iterator[LifelineStack]:
    with lifeline_stack(vpn_router_lab) as lifeline:
        yield lifeline


@pytest.fixture
def repaired(stack: LifelineStack) -> Iterator[LifelineStack]:
    """Whatever a test breaks is repaired, and its agent stopped, afterwards."""
    with repair_afterwards(stack):
        yield stack


# layer: the failed verdict's words
EXPECTED = {
    **{layer: FAILED_TEXT[layer] for layer in ("link", "router", "internet", "vpn", "agency", "dns")},
    "cad": CAD_REFUSED,
    "power": "battery almost empty",
}


@pytest.mark.parametrize("layer", list(EXPECTED))
def test_breaking_a_layer_behind_a_vpn_router_names_that_layer(repaired: LifelineStack, layer: str) -> None:
    stack = repaired
    stack.start_agent(agent_targets(interval=INTERVAL))
    healthy = stack.wait_healthy()
    assert healthy["vpn_inferred"] is False  # the tunnel address is probed
    assert not (stack.status().get("routes") or {}).get("cad", [{}])[0].get("via_tunnel")
    assert break_layer(stack, layer, EXPECTED[layer]) == []


def test_a_blocked_tunnel_is_inferred_from_what_the_laptop_reaches(repaired: LifelineStack) -> None:
    stack = repaired
    stack.start_agent(agent_targets(interval=INTERVAL, vpn_probe=False))
    healthy = stack.wait_healthy()
    assert healthy["vpn_inferred"] is True
    BREAKS["vpn"](stack.lab)
    judged = stack.wait_assessment(
        lambda a: a["verdict_layer"] == "vpn" and a["verdict_state"] == "failed", "the inferred verdict vpn"
    )
    assert verdict_problems(judged, "vpn", VPN_INFERRED) == []
    assert judged["vpn_inferred"] is True
