"""In the lab: a hard cut, a gradual ramp, a total cut and benign blips each page exactly as they should.

The real collector runs on the VPN concentrator's box (``vpnhub``: 10.20.0.1 through the tunnel,
203.0.113.10 from the internet) and pages a webhook receiver this test owns, listening on that
namespace's loopback; the real agent runs in the laptop namespace. The agent probes at its default
1 s interval here, because the collector's CadTargetUnreachable counts probe rounds. The CAD
simulator's own log says when CAD was really lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lifeline_lab import scenario
from lifeline_lab.procs import wait_until
from lifeline_lab.stack import LifelineStack, agent_targets
from lifeline_lab.testing import lab_fixture, lifeline_stack, repair_afterwards
from lifeline_lab.topology import Lab
from lifeline_lab.verdicts import cad_losses
from lifeline_lab.webhook import Notification

pytestmark = [pytest.mark.lab, pytest.mark.system, pytest.mark.slow]

alert_lab = lab_fixture(cadsim=True, tag="la")
INTERVAL = 1.0


@pytest.fixture(scope="module")
def stack(alert_lab: Lab) -> Iterator[LifelineStack]:
    with lifeline_stack(alert_lab) as lifeline:
        yield lifeline


@pytest.fixture
def agent(stack: LifelineStack) -> Iterator[LifelineStack]:
    with repair_afterwards(stack):
        stack.start_agent(agent_targets(interval=INTERVAL))
        stack.wait_healthy()
        yield stack


def play(stack: LifelineStack, timeline: dict[str, Any]) -> float:
    """Play a scenario in real time; returns the wall time it started."""
    sc = scenario.parse(timeline, "test_alert_scenarios", str(timeline["description"]))
    started = time.time()
    scenario.run(stack.lab, sc, emit=lambda _line: None)
    return started


def key(n: Notification) -> tuple[str, str]:
    """An alert's identity for these tests: its name and what it is about."""
    return (n.name, n.labels.get("layer") or n.labels.get("target") or n.severity)


def all_resolved(stack: LifelineStack, since: float) -> bool:
    fired = {key(n) for n in stack.receiver.notifications(since=since, status="firing")}
    resolved = {key(n) for n in stack.receiver.notifications(since=since, status="resolved")}
    return fired <= resolved


def test_a_hard_cut_pages_the_broken_layer_once_and_resolves(agent: LifelineStack) -> None:
    started = play(
        agent,
        {
            "description": "hard cut: broadband blackholed for 10 s",
            "duration": "13s",
            "expect": {"cad_lost": True, "layer": "isp", "page": True},
            "steps": [
                {"at": "3s", "action": "blackhole", "link": "broadband"},
                {"at": "13s", "action": "clear"},
            ],
        },
    )
    wait_until(lambda: all_resolved(agent, started), "every alert resolved after the repair", timeout=40.0)
    fired = agent.receiver.notifications(since=started, status="firing")
    keys = [key(n) for n in fired]
    # Each alert (its name, subject and severity: a DNS warning may turn critical) paged once.
    assert len({(*key(n), n.severity) for n in fired}) == len(fired)
    # One page for the outage: the broken layer (the CAD targets that fail with it are the same
    # incident, not pages of their own); no layer behind the cut is named.
    assert keys == [("PositionLayerFailed", "internet")], keys
    layer_page = next(n for n in fired if key(n) == ("PositionLayerFailed", "internet"))
    assert layer_page.severity == "critical"
    assert layer_page.annotations["summary"] == (
        "Position 12 (north) lost CAD — home internet (ISP) down, router fine; hotspot ready."
    )
    assert layer_page.annotations["link"].endswith("/positions/pos-12")
    assert cad_losses(agent.lab, started)  # the CAD simulator agrees CAD was lost


def test_a_gradual_ramp_warns_before_cad_is_lost_then_pages(agent: LifelineStack) -> None:
    started = play(
        agent,
        {
            "description": "gradual ramp: home link loss 0 → 90 % over 40 s",
            "duration": "55s",
            "expect": {"cad_lost": True, "layer": "link", "page": True},
            "steps": [
                {"at": "3s", "action": "ramp", "kind": "loss", "link": "primary", "from": 0, "to": 90,
                 "over": "40s", "steps": 8},
                {"at": "55s", "action": "clear"},
            ],
        },
    )  # fmt: skip
    wait_until(lambda: all_resolved(agent, started), "every alert resolved after the repair", timeout=40.0)
    fired = agent.receiver.notifications(since=started, status="firing")
    lost = cad_losses(agent.lab, started)
    assert lost, "the ramp is meant to cost the CAD session"
    # The prediction was paged before the CAD simulator lost its session (the CAD probes' own
    # page may come first or later: 3 failed rounds in a row happen under heavy loss too). Random
    # loss makes the agent's trend visible at different levels: early enough for a time to loss
    # ("will likely lose CAD within 15 s"), or already past what CAD survives ("is losing CAD
    # now", once the few seconds in which a hard cut would have been named failed are over).
    warnings = [n for n in fired if n.name == "CadAtRisk"]
    assert warnings, [key(n) for n in fired]
    first = warnings[0]
    assert first.at < lost[0], (first.at - started, lost[0] - started)
    assert first.annotations["summary"].startswith(
        ("Position 12 (north) will likely lose CAD within ", "Position 12 (north) is losing CAD now — ")
    ), first.annotations["summary"]
    # … naming what the agent saw (its loss trend, or the home network once that is judged lossy).
    assert "packet" in first.annotations["summary"], first.annotations["summary"]
    # No "lost CAD" page before the prediction.
    assert all(n.at >= first.at for n in fired if n.name == "PositionLayerFailed")
    # Then the loss itself, the silence at total loss and the CAD probes are the same outage: the
    # critical prediction's incident is updated, not paged again, and resolves with its story.
    critical = [n for n in fired if n.severity == "critical"]
    assert [n.name for n in critical] == ["CadAtRisk"], [key(n) for n in fired]
    resolved = [
        n for n in agent.receiver.notifications(since=started, status="resolved") if n.severity == "critical"
    ]
    assert [n.name for n in resolved] == ["CadAtRisk"]
    assert "home network link" in resolved[0].annotations.get("story", ""), resolved[0].annotations


def test_a_benign_spike_pages_nobody(agent: LifelineStack) -> None:
    started = play(
        agent,
        {
            "description": "benign spikes: 2 s blackhole, then 2 s of 30 % loss on the home link",
            "duration": "20s",
            "expect": {"cad_lost": False, "layer": "link", "page": False},
            "steps": [
                {"at": "3s", "action": "blackhole", "link": "primary"},
                {"at": "5s", "action": "clear"},
                {"at": "9s", "action": "loss", "link": "primary", "percent": 30},
                {"at": "11s", "action": "clear"},
            ],
        },
    )
    assert not cad_losses(agent.lab, started)  # CAD rode it out
    time.sleep(5.0)  # anything the spike set off would reach the webhook within this
    assert agent.receiver.notifications(since=started) == []


def test_a_total_cut_pages_once_before_cad_is_lost_and_tells_its_story(agent: LifelineStack) -> None:
    timeline = scenario.load("total-cut")
    started = play(agent, _shortened(timeline, cut=3.0, back=18.0))
    cut = started + 3.0
    wait_until(
        lambda: all_resolved(agent, started), "the outage resolved once the position is back", timeout=60.0
    )
    fired = agent.receiver.notifications(since=started, status="firing")
    assert [n.name for n in fired] == ["PositionSilent"], [key(n) for n in fired]  # one page
    (page,) = fired
    lost = cad_losses(agent.lab, started)
    assert lost, "a total cut is meant to cost the CAD session"
    assert page.at < lost[0], (page.at - cut, lost[0] - cut)  # before the CAD client gave up
    assert page.at - cut < 5.0, page.at - cut  # seconds, not the 15 s of batch silence
    assert page.annotations["summary"].startswith("Position 12 (north) went dark "), page.annotations
    assert "nothing over the VPN" in page.annotations["summary"]
    (resolved,) = agent.receiver.notifications(since=started, status="resolved")
    assert resolved.labels == page.labels
    story = resolved.annotations.get("story", "")
    assert story.startswith("cut off "), resolved.annotations
    assert "home internet (ISP) down from " in story, story


def test_benign_blackouts_and_loss_bursts_on_every_path_page_nobody(agent: LifelineStack) -> None:
    blackout = scenario.load("blackout-2s-survived")
    burst = scenario.load("loss-40-burst-survived")
    started = play(agent, _shortened(blackout, cut=3.0, back=5.0))
    second = play(agent, _shortened(burst, cut=3.0, back=7.0))
    lost = [round(t - started, 1) for t in cad_losses(agent.lab, started)]
    assert not lost, f"CAD lost at {lost} s (the loss burst started at {second - started + 3.0:.1f} s)"
    time.sleep(5.0)  # anything they set off would reach the webhook within this
    sent = agent.receiver.notifications(since=started)
    assert sent == [], [
        (round(n.at - started, 1), n.status, key(n), n.annotations.get("summary")) for n in sent
    ]


def _shortened(sc: scenario.Scenario, *, cut: float, back: float) -> dict[str, Any]:
    """A shipped scenario's steps as a timeline that starts breaking at ``cut`` and clears at ``back``
    (lab tests keep their time short; bench/detection.py plays the shipped timing)."""
    shift = cut - sc.steps[0].at
    steps: list[dict[str, Any]] = []
    for step in sc.steps:
        if step.action == "clear":
            steps.append({"at": f"{back}s", "action": "clear"})
        else:
            assert step.impairment is not None
            steps.append({"at": f"{step.at + shift}s", **step.impairment.to_json(), "action": step.action})
    for item in steps:
        item.pop("kind", None)
    return {
        "description": sc.description,
        "duration": f"{back}s",
        "expect": {"cad_lost": sc.expect.cad_lost, "layer": sc.expect.layer, "page": sc.expect.page},
        "steps": steps,
    }
