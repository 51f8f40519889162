"""Minimum durations and recovery holds: real trouble is announced fast, noise not at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lifeline_agent.health.hysteresis import BandTracker, Held, Hysteresis

Position = Any


def test_held_measures_an_unbroken_condition() -> None:
    held = Held()
    assert held.update("x", True, 10.0) == 0.0
    assert held.update("x", True, 12.5) == 2.5
    assert held.update("x", False, 13.0) == 0.0
    assert held.update("x", True, 14.0) == 0.0  # the clock restarts after a break


def test_hysteresis_worse_at_once_better_after_the_hold() -> None:
    h = Hysteresis(state="ok", reason="fine")
    assert h.update("failed", "down", 100.0, recover_hold=10.0)
    assert (h.state, h.since) == ("failed", 100.0)
    assert not h.update("ok", "fine", 101.0, recover_hold=10.0)
    assert not h.update("ok", "fine", 110.5, recover_hold=10.0)
    assert h.state == "failed"
    assert h.update("ok", "fine", 111.0, recover_hold=10.0)
    assert (h.state, h.reason, h.since) == ("ok", "fine", 111.0)


def test_hysteresis_one_bad_round_restarts_the_recovery_hold() -> None:
    h = Hysteresis(state="failed", reason="down")
    h.update("ok", "fine", 0.0, 10.0)
    h.update("failed", "down", 8.0, 10.0)  # back down before the hold ended
    assert not h.update("ok", "fine", 9.0, 10.0)
    assert not h.update("ok", "fine", 18.0, 10.0)
    assert h.update("ok", "fine", 19.0, 10.0)


def test_band_tracker_climbs_at_once_and_descends_after_the_hold() -> None:
    b = BandTracker((("low", 0.0), ("warn", 0.5), ("page", 0.8)))
    assert b.update(0.9, 0.0, 10.0)
    assert b.band == "page"
    assert not b.update(0.6, 1.0, 10.0)
    assert b.update(0.6, 11.0, 10.0)
    assert b.band == "warn"


def _states(a: Any) -> dict[str, str]:
    return {s.layer: s.state for s in a.layers}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_two_second_total_loss_spike_changes_nothing(position: Callable[..., Position], seed: int) -> None:
    pos = position(seed=seed)
    before = _states(pos.history[-1])
    pos.model.events()
    pos.cond("internet").down = True
    spike = pos.run(2)
    pos.clear()
    after = pos.run(70)  # the spike stays in the 60 s loss window all this time
    assert all(_states(a) == before for a in spike + after)
    assert all(a.risk_band == "low" and a.verdict == "healthy" for a in spike + after)
    assert pos.model.events() == []


def test_sustained_loss_degrades_the_layer_that_loses(position: Callable[..., Position]) -> None:
    pos = position()
    pos.cond("internet").loss = 0.05
    history = pos.run(60)
    degraded_at = next(i for i, a in enumerate(history) if a.layer("internet").state == "degraded")
    assert degraded_at < 40
    last = history[-1]
    assert last.verdict_layer == "internet"
    assert last.verdict.startswith("home internet (ISP) losing packets (")
    assert last.layer("router").state == "ok"
    assert all(a.layer("internet").state != "failed" for a in history)


@pytest.mark.parametrize("layer", ["router", "internet", "vpn", "cad"])
def test_a_hard_cut_is_failed_within_three_evaluations(position: Callable[..., Position], layer: str) -> None:
    pos = position()
    pos.cond(layer).down = True
    first_three = pos.run(3)
    assert first_three[-1].layer(layer).state == "failed"
    assert first_three[-1].verdict_layer == layer
    assert first_three[-1].risk_band == "page"
    assert first_three[0].layer(layer).state == "ok"  # one lost round is not an outage yet


def test_recovery_needs_the_hold(position: Callable[..., Position]) -> None:
    pos = position()
    pos.cond("router").down = True
    pos.run(10)
    pos.clear()
    after = pos.run(20)
    hold = pos.model.tuning.recover_hold
    states = [a.layer("router").state for a in after]
    recovered_at = states.index("ok")
    assert all(s == "failed" for s in states[:recovered_at])
    assert recovered_at >= hold - 1  # a fresh good round is not yet a recovery
    assert recovered_at <= hold + 2
    # a new outage inside the hold restarts it
    pos.cond("router").down = True
    pos.run(4)
    pos.clear()
    pos.run(5)
    pos.cond("router").down = True
    pos.run(3)
    pos.clear()
    states = [a.layer("router").state for a in pos.run(9)]
    assert states == ["failed"] * 9


def test_benign_bufferbloat_neither_fails_nor_pages(position: Callable[..., Position]) -> None:
    """RTT 250 ms with 0 % loss for 10 s: CAD survives it, nobody is paged."""
    pos = position()
    cond = pos.cond("internet")
    cond.delay, cond.noise = 0.235, 0.010
    burst = pos.run(10)
    assert min(p.mos for a in burst[5:] for p in a.mos) < 4.0  # the burst is visible in MOS
    pos.clear()
    history = burst + pos.run(60)
    assert all(all(s.state != "failed" for s in a.layers) for a in history)
    assert max(a.risk for a in history) < pos.model.tuning.band_floor("page")
    assert all(a.risk_band in ("low", "watch") for a in history)
    assert all(a.warning is None for a in history)


def test_a_pulled_cable_reported_by_netlink_fails_the_link_at_the_next_evaluation(
    position: Callable[..., Position],
) -> None:
    from lifeline_agent.health import RouteFacts

    pos = position()
    pos.facts["routes"] = RouteFacts("eth0", False, "usb0", True)
    pos.cond("link").down = True
    a = pos.second()
    assert a.layer("link").state == "failed"
    assert a.verdict == "home network link down (eth0)"
    assert a.risk == 1.0


def test_a_cut_is_seen_when_a_round_is_overdue_not_when_it_times_out(
    position: Callable[..., Position],
) -> None:
    """Rounds report a loss only when their 0.8 s timeout runs out; the model counts a round that
    is a few RTTs overdue as unanswered, and says when to look again so no tick is waited for."""
    from lifeline_agent.config import Target
    from lifeline_agent.probes.base import ProbeResult

    gw = Target("gw", "router", "icmp", "192.168.1.1", interval=1.0, timeout=0.8)
    pos = position([gw], settle=0)
    model, clock = pos.model, pos.clock
    for _ in range(20):  # healthy rounds, 2 ms RTT, 1 s apart
        clock.advance(0.002)
        model.observe_probe(gw, ProbeResult(True, rtt_avg=0.002, sent=1, received=1, duration=0.002))
        clock.advance(0.998)
        model.evaluate()
    cut = clock.monotonic()  # rounds begin at cut, cut + 1, cut + 2 …; every one is lost
    for _ in range(2):
        clock.advance(0.8)
        model.observe_probe(gw, ProbeResult(False, "timeout", sent=1, duration=0.8))
        assert model.evaluate().layer("router").state != "failed"
        clock.advance(0.2)
    # The third lost round began at cut + 2.0; it is overdue at cut + 2.15 (margin: 0.15 s floor).
    wake = model.next_check()
    assert wake is not None
    assert cut + 2.15 <= wake <= cut + 2.2
    clock.advance(0.1)  # cut + 2.1: not yet overdue
    assert model.evaluate().layer("router").state != "failed"
    clock.advance(wake - clock.monotonic())
    a = model.evaluate()
    assert a.layer("router").state == "failed"
    # Only the router is probed and nothing says the home network is up: either may have gone.
    assert a.verdict == "home network or home router down"


def _timed_outage(
    build: Callable[..., Position], offset: float, length: float
) -> tuple[float | None, list[str]]:
    """Event-timed position: 7 targets at 1 s, their rounds spread evenly over the second (as the
    scheduler spreads them), echoes observed when they come back or at their 0.8 s timeout,
    the model evaluated at every observation and whenever it asks (``next_check``). The ISP link
    goes silent 40 s in, plus ``offset``, for ``length`` seconds. Returns the
    time from the cut to the internet layer being judged failed (None: never) and the verdict layers."""
    import heapq

    from lifeline_agent.config import Target
    from lifeline_agent.probes.base import ProbeResult

    names = [
        Target("gw", "router", "icmp", "192.168.1.1", path="primary", timeout=0.8),
        Target("isp", "internet", "icmp", "1.1.1.1", path="primary", timeout=0.8),
        Target("vpn-gw", "vpn", "icmp", "10.8.0.1", path="tunnel", timeout=0.8),
        Target("agency-core", "router", "icmp", "10.20.0.1", path="tunnel", timeout=0.8),
        Target("agency-dns", "dns", "dns", "10.20.0.53", path="tunnel", timeout=0.8),
        Target("cad-ping", "cad", "icmp", "10.30.0.10", path="tunnel", timeout=0.8),
        Target("cad-port", "cad", "tcp", "10.30.0.10", path="tunnel", port=7000, timeout=0.8),
    ]
    # The scheduler's slots: k / 7 of the second; everything but the router probe crosses the ISP.
    targets = [(t, k / len(names), t.name != "gw") for k, t in enumerate(names)]
    pos = build([t for t, _, _ in targets], settle=0)
    model, clock = pos.model, pos.clock
    start = clock.monotonic()
    cut_at, end_at = start + 40.0 + offset, start + 40.0 + offset + length
    queue: list[tuple[float, int, str, int]] = []  # (time, order, what, target index)
    for i, (_, phase, _) in enumerate(targets):
        heapq.heappush(queue, (start + phase, i, "send", i))
    failed_at, layers, n = None, [], len(targets)
    checks: set[float] = set()
    while queue:
        t, _, what, i = heapq.heappop(queue)
        if t > start + 95.0:  # the cut, and 25 s of the repair after it
            break
        clock.advance(t - clock.monotonic())
        target, _, behind_isp = targets[i]
        if what == "send":
            lost = behind_isp and cut_at <= t < end_at
            heapq.heappush(queue, (t + (0.8 if lost else 0.01), n, "lost" if lost else "answer", i))
            heapq.heappush(queue, (t + 1.0, n + 1, "send", i))
            n += 2
            continue
        if what in ("lost", "answer"):
            ok = what == "answer"
            duration = 0.01 if ok else 0.8
            model.observe_probe(
                target,
                ProbeResult(
                    ok,
                    "" if ok else "timeout",
                    rtt_avg=0.01 if ok else None,
                    sent=1,
                    received=int(ok),
                    duration=duration,
                ),
            )
        a = model.evaluate()
        layers.append(a.verdict_layer)
        if failed_at is None and a.layer("internet").state == "failed":
            failed_at = t
        wake = model.next_check()
        if wake is not None and wake > t and wake not in checks:  # as the service: one timer a time
            checks.add(wake)
            heapq.heappush(queue, (wake, n, "check", i))
            n += 1
    return (None if failed_at is None else failed_at - cut_at), layers


@pytest.mark.parametrize("offset", [0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.7, 0.85, 0.95])
def test_probes_crossing_a_layer_time_its_cut_to_a_fraction_of_a_second(
    position: Callable[..., Position], offset: float
) -> None:
    """Every probe behind the ISP crosses it, and their rounds fall on four phases of the second, so
    together they say a cut has lasted past the 2.1 s crossing hold within ~0.5 s of that moment —
    not at the third round of the ISP's own probe (up to 3.2 s): the page can go out under 3 s."""
    took, layers = _timed_outage(position, offset, 30.0)
    assert took is not None
    assert 2.1 <= took <= 2.65, took
    assert {layer for layer in layers if layer != "none"} == {"internet"}


@pytest.mark.parametrize("offset", [0.0, 0.1, 0.3, 0.55, 0.8, 0.95])
def test_a_two_second_blackout_is_never_a_cut(position: Callable[..., Position], offset: float) -> None:
    """The same probes through a 2 s blackout (shorter than a CAD client's patience): not failed."""
    took, _ = _timed_outage(position, offset, 2.0)
    assert took is None
