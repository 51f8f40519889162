"""The dispatcher's warning and the status screen read plainly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lifeline_agent.health import render_status


def test_vpn_down_warning_says_what_to_do(position: Callable[..., Any]) -> None:
    pos = position()
    pos.cond("vpn").down = True
    a = pos.run(4)[-1]
    assert a.warning == (
        "Your CAD connection is failing — VPN tunnel down, internet fine. Switch to the hotspot or call the floor."
    )


def test_warning_when_the_hotspot_is_not_ready_either(position: Callable[..., Any]) -> None:
    pos = position()
    pos.cond("backup").down = True
    pos.run(5)
    pos.cond("cad").refused = True
    a = pos.run(4)[-1]
    assert a.backup_ready is False
    assert a.warning == (
        "Your CAD connection is failing — CAD server refusing connections. "
        "The hotspot is not ready either (hotspot has no internet) — call the floor now."
    )


def test_healthy_status_screen(position: Callable[..., Any]) -> None:
    screen = render_status(position().second())
    lines = screen.splitlines()
    assert lines[0] == "Lifeline — position 12"
    assert "CAD connection: OK — healthy" in lines
    assert "Risk of losing CAD soon: 0 %" in lines
    assert "  ✔ Home router     answering (RTT 2 ms)" in lines
    assert "  ✔ VPN tunnel      tunnel up" in lines
    assert "Backup (hotspot): ready (RTT 48 ms, loss 0 %)" in lines
    assert "⚠" not in screen


def test_failing_status_screen_marks_each_layer(position: Callable[..., Any]) -> None:
    pos = position()
    pos.cond("internet").down = True
    screen = render_status(pos.run(4)[-1])
    assert "CAD connection: FAILING — home internet (ISP) down, router fine" in screen
    assert "  ✔ Home router     answering" in screen
    assert "  ✖ Internet (ISP)  home internet (ISP) down" in screen
    assert "  ✖ CAD server      CAD server not answering" in screen
    assert "Risk of losing CAD soon: 100 %, expected within" in screen
    assert "⚠ Your CAD connection is failing — home internet (ISP) down, router fine." in screen


def test_degraded_and_unmeasured_layers(position: Callable[..., Any]) -> None:
    from lifeline_agent.config import Target

    pos = position([Target("gw", "router", "icmp", "192.168.1.1")], settle=5)
    pos.cond("router").loss = 0.4
    screen = render_status(pos.run(40)[-1])
    # Loss on the way to the first hop is the home network's (Wi-Fi or cable), not the router's.
    assert "  ! Home network    home network losing packets (" in screen
    assert "  ? CAD server      not measured" in screen
    assert "Backup (hotspot): not checked (no backup path configured)" in screen


def test_times_left_are_rounded_as_a_person_says_them() -> None:
    from lifeline_agent.health.render import time_words

    said = {t: time_words(t) for t in (0.0, 0.4, 3.2, 12.6, 29.0, 31.0, 62.0, 100.0, 170.0, float("inf"))}
    assert said == {
        0.0: "a few seconds",
        0.4: "a few seconds",
        3.2: "a few seconds",
        12.6: "about 15 s",
        29.0: "about 30 s",
        31.0: "about 30 s",
        62.0: "about a minute",
        100.0: "about 2 min",
        170.0: "about 3 min",
        float("inf"): "no loss expected",
    }
    assert all("now" not in words for words in said.values())


def test_no_time_left_is_said_as_now_never_within_now(position: Callable[..., Any]) -> None:
    """A prediction with no time left reads "is failing now", not "may fail within now"."""
    from dataclasses import replace

    from lifeline_agent.health.render import local_warning

    a = position().second()
    dying = replace(
        a,
        risk=1.0,
        risk_band="page",
        time_to_loss=0.0,
        risk_reason="the path to CAD is losing 80 % of packets",
    )
    assert local_warning(dying) == (
        "Your CAD connection is failing now — the path to CAD is losing 80 % of packets. "
        "Switch to the hotspot or call the floor."
    )
    assert "within now" not in render_status(dying)
    soon = replace(
        dying, time_to_loss=27.0, risk_reason="packet loss on the path to CAD rising (40 %, +1.2 %/s)"
    )
    assert local_warning(soon) is not None
    assert local_warning(soon).startswith("Your CAD connection may fail within about 25 s — ")  # type: ignore[union-attr]


def test_after_recovery_nothing_is_said_to_be_at_risk(position: Callable[..., Any]) -> None:
    """The risk band is held for the recovery hold once the risk has gone; the dispatcher is not
    told the connection "is at risk — stable" meanwhile."""
    pos = position()
    pos.cond("cad").down = True
    pos.run(8)
    pos.clear()
    after = pos.run(25)
    assert all("stable" not in (a.warning or "") for a in after), [a.warning for a in after]
    assert after[-1].warning is None
