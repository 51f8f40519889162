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
        "The hotspot is not ready either — call the floor now."
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
