"""pytest support: a lab per test module, always torn down, and checks that nothing is left.

In a conftest::

    from lifeline_lab.testing import lab_fixture

    lab = lab_fixture()                                   # client VPN, no CAD simulator
    router_lab = lab_fixture(vpn="router", cadsim=True)

Each fixture builds a fresh lab with a unique prefix for its scope (module by default), yields
the ``Lab`` and tears it down afterwards even when the tests fail; teardown then asserts that
``leftovers`` is empty (namespaces, processes, WireGuard sockets, state files). Without root
the fixture skips with the reason; everything else that is missing (wireguard-go, nft, fping)
fails loudly, because CI must run these tests.

For the tests that run Lifeline itself in a lab: ``lifeline_stack`` (the real collector on the
concentrator's box, paging a webhook receiver there), ``repair_afterwards`` (whatever a test breaks
is mended and its agent stopped) and ``break_layer`` (break one layer, check the verdict names it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from lifeline_lab import impair, procs
from lifeline_lab.procs import wait_until
from lifeline_lab.stack import LifelineStack
from lifeline_lab.topology import Lab, list_namespaces
from lifeline_lab.verdicts import BREAKS, healthy_fixtures, verdict_problems
from lifeline_lab.webhook import WebhookReceiver
from lifeline_lab.wireguard import WG_SOCKET_DIR

TOOLS = ("ip", "nft", "iptables", "tc", "wg", "wireguard-go", "fping", "ss")


def require_lab() -> None:
    """Skip without root (with the reason); fail if a tool the lab needs is missing."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root: network namespaces, nftables, WireGuard (CI runs as root)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"tools the lab needs are missing: {', '.join(missing)} (run `make apt`)")


def unique_prefix(tag: str = "t") -> str:
    return f"{tag}{secrets.token_hex(3)}-"


def leftovers(lab: Lab) -> list[str]:
    """What a torn-down lab left behind; empty when it cleaned up after itself."""
    out = [f"namespace {n}" for n in list_namespaces() if n in lab.namespaces.values()]
    out += [f"process {name} (pid {rec.pid})" for name, rec in lab.procs.items() if procs.is_alive(rec)]
    for ifname in (lab.wg_client_if, lab.wg_hub_if):
        sock = os.path.join(WG_SOCKET_DIR, f"{ifname}.sock")
        if os.path.exists(sock):
            out.append(f"socket {sock}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    out += [
        f"root interface {ifname}" for ifname in (lab.wg_client_if, lab.wg_hub_if) if f" {ifname}:" in links
    ]
    for path in (lab.state_path, lab.lock_path, lab.workdir):
        if os.path.exists(path):
            out.append(f"file {path}")
    return out


def lab_fixture(
    vpn: str = "client",
    *,
    cadsim: bool = False,
    scope: Any = "module",
    tag: str = "t",
) -> Any:
    """A pytest fixture yielding an up ``Lab``; torn down and checked for leftovers afterwards."""

    @pytest.fixture(scope=scope)
    def _lab() -> Iterator[Lab]:
        require_lab()
        lab = Lab(unique_prefix(tag), vpn, cadsim=cadsim)
        # Remember every process ever started, so the leftover check also covers stopped ones.
        started: dict[str, procs.ProcRecord] = {}
        try:
            lab.up()
            yield lab
        finally:
            started.update(lab.procs)
            lab.down()
        lab.procs = started
        left = leftovers(lab)
        lab.procs = {}
        assert not left, f"the lab left things behind: {left}"

    return _lab


# -- Lifeline in the lab ----------------------------------------------------------------------------


@contextmanager
def lifeline_stack(lab: Lab) -> Iterator[LifelineStack]:
    """The real collector on ``vpnhub`` paging a webhook receiver there, over a healthy home.

    No agent yet (a test starts its own); on exit the agent, the collector and the receiver stop.
    """
    receiver = WebhookReceiver([lab.ns("vpnhub")])
    lifeline = LifelineStack(lab, receiver)
    try:
        healthy_fixtures(lab)
        lifeline.start_collector()
        yield lifeline
    finally:
        lifeline.close()
        receiver.close()


@contextmanager
def repair_afterwards(stack: LifelineStack) -> Iterator[LifelineStack]:
    """Whatever the block breaks is repaired (impairments cleared, healthy readings) and its agent
    stopped, so the next test starts from a healthy home."""
    try:
        yield stack
    finally:
        impair.clear(stack.lab)
        healthy_fixtures(stack.lab)
        stack.stop_agent()


def break_layer(stack: LifelineStack, layer: str, words: str, *, hold: float = 1.0) -> list[str]:
    """Break ``layer`` (``BREAKS``) under the running agent; what is wrong with the verdict that
    follows, empty when it is right.

    Right: the agent's verdict names ``layer`` as failed, in ``words``, and no other layer; it still
    does ``hold`` seconds later (no flapping to a neighbour); and the collector holds it too.
    """
    BREAKS[layer](stack.lab)
    judged = stack.wait_assessment(
        lambda a: a["verdict_layer"] == layer and a["verdict_state"] == "failed", f"the verdict {layer}"
    )
    problems = verdict_problems(judged, layer, words)
    if problems:
        return problems
    time.sleep(hold)
    problems = verdict_problems(stack.assessment() or {}, layer, words)
    if problems:
        return [f"{hold:g} s later: {problem}" for problem in problems]
    wait_until(
        lambda: (stack.latest_verdict() or {}).get("layer") == layer,
        f"lifeline_verdict_info{{layer={layer!r}}} at the collector",
        timeout=30.0,
    )
    return []
