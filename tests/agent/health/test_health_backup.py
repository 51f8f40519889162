"""Backup readiness follows the backup path's own probes, with the primary's holds, and says why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lifeline_agent.config import Target
from lifeline_agent.health import RouteFacts
from lifeline_agent.health.layers import Tuning

from .conftest import laptop_vpn_targets

Position = Any  # the simulated position from conftest.py


def with_hotspot_gateway() -> list[Target]:
    """The hotspot's own address probed over the backup path, beside the concentrator over it."""
    gateway = Target("hotspot-gw", "router", "icmp", "192.168.42.1", path="backup", interface="usb0")
    return [*laptop_vpn_targets(), gateway]


def test_hotspot_without_internet_is_not_ready_within_the_fail_hold(
    position: Callable[..., Position],
) -> None:
    """The hotspot answers but nothing answers through it (its uplink is blackholed): not ready,
    within the primary's fail hold, and it says why. The hotspot's own answers do not make it ready
    (they kept it "degraded — not answering", ready, for a whole 60 s outage)."""
    pos = position(with_hotspot_gateway())
    pos.unlucky = {"hotspot-vpn"}  # the concentrator over the hotspot gets nothing back
    started = pos.clock.time()
    run = pos.run(6)
    first = next(a for a in run if a.backup_ready is False)
    assert first.at - started <= Tuning().fail_hold + 1.5
    a = run[-1]
    assert a.backup_reason == "hotspot not ready: hotspot has no internet"
    assert (a.verdict_layer, a.verdict) == (
        "backup",
        "hotspot not ready: hotspot has no internet — primary fine",
    )


def test_hotspot_answering_nothing_is_off_or_out_of_reach(position: Callable[..., Position]) -> None:
    pos = position(with_hotspot_gateway())
    pos.cond("backup").down = True
    a = pos.run(6)[-1]
    assert (a.backup_ready, a.backup_reason) == (False, "hotspot not ready: hotspot off or out of reach")


def test_hotspot_unplugged_says_so(position: Callable[..., Position]) -> None:
    pos = position()
    pos.facts["routes"] = RouteFacts("wlan0", True, "usb0", False)
    pos.cond("backup").down = True
    a = pos.run(3)[-1]
    assert (a.backup_ready, a.backup_reason) == (
        False,
        "hotspot not ready: hotspot off or unplugged: usb0 down",
    )


def test_a_total_cut_reads_hotspot_not_ready_within_seconds(position: Callable[..., Position]) -> None:
    """Home uplink and the hotspot's uplink blackholed together: the verdict names the home side and
    the hotspot is not ready (not "hotspot ready" on every page)."""
    pos = position()
    pos.cond("internet").down = True
    pos.cond("backup").down = True
    run = pos.run(5)
    assert run[-1].backup_ready is False
    assert run[-1].verdict_layer == "internet"
    assert run[-1].warning is not None
    assert "The hotspot is not ready either (hotspot has no internet)" in run[-1].warning


def test_a_restored_backup_path_does_not_read_as_losing_packets(position: Callable[..., Position]) -> None:
    """A 60 s blackout of the hotspot's uplink, then restored: once the path answers again its loss
    restarts from there — the outage was reported as one, not as "losing packets (4.8 %)" for the
    minute after it (seen 39 s after the restore)."""
    pos = position()
    pos.cond("backup").down = True
    assert pos.run(60)[-1].backup_ready is False
    pos.clear()
    after = pos.run(30)
    hold = int(Tuning().recover_hold)
    assert after[hold + 2].backup_ready is True
    for a in after[hold + 2 :]:
        assert a.layer("backup").state == "ok", a.layer("backup")
        assert a.backup_loss == 0.0
