"""The agent measures what the lab does: its ICMP probe through the tunnel against the lab's
configured delay, the lab's own drop counters and fping on the same path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lifeline_lab import impair
from lifeline_lab.layout import ADDR
from lifeline_lab.measure import PingResult, fping
from lifeline_lab.topology import Lab

pytestmark = [pytest.mark.lab, pytest.mark.system, pytest.mark.slow]

DRIVER = Path(__file__).with_name("agent_icmp_driver.py")
DELAY_MS = 40.0
LOSS_PCT = 5.0
ROUNDS, COUNT = 10, 100  # 1000 echoes, 10 ms apart within a round


def agent_probe(lab: Lab) -> PingResult:
    argv = [sys.executable, str(DRIVER), ADDR.cad_server, str(ROUNDS), str(COUNT), "0.01", "1.0"]
    done = lab.exec("laptop", argv, timeout=120)
    return PingResult(ADDR.cad_server, tuple(json.loads(done.stdout)["rtts_ms"]))


def window_loss(lab: Lab, before: tuple[int, int]) -> tuple[int, float]:
    seen, dropped = impair.counters(lab, "tunnel", "up")
    n = seen - before[0]
    return n, (dropped - before[1]) / n


def close(a: float, b: float) -> bool:
    """Within 1 ms or 3 %, whichever is wider (the design's probe accuracy bar)."""
    return abs(a - b) <= max(1.0, 0.03 * b)


def test_agent_icmp_probe_matches_the_lab_and_fping(lab: Lab) -> None:
    base = fping(lab, "laptop", ADDR.cad_server, count=200, period_ms=5).median
    assert base is not None
    impair.apply(lab, impair.make("delay", "tunnel", "up", delay_ms=DELAY_MS))
    impair.apply(lab, impair.make("loss", "tunnel", "up", percent=LOSS_PCT))
    truth_rtt = DELAY_MS + base
    try:
        before = impair.counters(lab, "tunnel", "up")
        agent = agent_probe(lab)
        n_agent, truth_agent = window_loss(lab, before)

        before = impair.counters(lab, "tunnel", "up")
        ping = fping(lab, "laptop", ADDR.cad_server, count=1000, period_ms=10)
        n_ping, truth_ping = window_loss(lab, before)
    finally:
        impair.clear(lab)

    report = (
        f"truth {truth_rtt:.2f} ms; agent median {agent.median} ms, loss {agent.loss:.3%} "
        f"(lab dropped {truth_agent:.3%} of {n_agent}); fping median {ping.median} ms, loss {ping.loss:.3%} "
        f"(lab dropped {truth_ping:.3%} of {n_ping})"
    )
    print(report)
    assert agent.sent == ROUNDS * COUNT
    assert n_agent == agent.sent  # the lab saw exactly the agent's echoes in that window
    assert n_ping == ping.sent
    assert agent.median is not None
    assert ping.median is not None
    # RTT: within 1 ms or 3 % of the configured truth, and of fping on the same path
    assert close(agent.median, truth_rtt), report
    assert close(agent.median, ping.median), report
    assert close(ping.median, truth_rtt), report
    # loss: within 2 percentage points of what the lab really dropped, for both tools
    assert abs(agent.loss - truth_agent) <= 0.02, report
    assert abs(ping.loss - truth_ping) <= 0.02, report
    # and the lab dropped about what it was told to (binomial, 1000 echoes: σ ≈ 0.7 pp)
    assert abs(truth_agent - LOSS_PCT / 100) <= 0.035, report
    assert abs(truth_ping - LOSS_PCT / 100) <= 0.035, report
