"""The arithmetic under the rules: least squares with its error, loss views, layer mapping."""

from __future__ import annotations

import random

import pytest
from series_kit import series_of

from lifeline_agent.config import Target
from lifeline_agent.health import target_layer
from lifeline_agent.health.series import Round, TargetSeries, fit, loss_view


def test_fit_recovers_an_exact_line() -> None:
    line = fit([(float(x), 0.2 + 0.01 * x, 1.0) for x in range(-30, 1)])
    assert line is not None
    assert line.slope == pytest.approx(0.01)
    assert line.level == pytest.approx(0.2)
    assert line.stderr == pytest.approx(0.0, abs=1e-12)
    assert line.rising(min_points=10)
    assert fit([(0.0, 1.0, 1.0), (1.0, 2.0, 1.0)]) is None


def test_fit_does_not_believe_noise() -> None:
    rng = random.Random(3)
    rising = 0
    for _ in range(200):
        line = fit([(float(x), rng.random() * 0.1, 1.0) for x in range(-30, 0)])
        assert line is not None
        rising += line.rising(10)
    assert rising < 15  # a 2-sigma test on flat noise: a few percent false trends at most


def _series(pattern: str, sent: int = 1) -> TargetSeries:
    """One round a second: '.' all echoes back, 'x' all lost, 'p' one echo lost."""
    return series_of([{".": 0, "x": sent, "p": 1}[c] for c in pattern], sent)


def test_loss_view_tells_a_burst_from_sustained_loss() -> None:
    burst = loss_view([_series("....xx......")], 0.0)
    assert (burst.lost, burst.episodes, burst.partial_seconds) == (2, 1, 0)
    assert not burst.sustained(min_rounds=3, min_episodes=2, spike_max=5.0)
    outage = loss_view([_series("..xxxxxxxxxx..")], 0.0)
    assert not outage.sustained(3, 2, 5.0)  # an outage is reported as an outage, not as loss
    scattered = loss_view([_series("x...x....x...")], 0.0)
    assert scattered.episodes == 3
    assert scattered.sustained(3, 2, 5.0)
    heavy = loss_view([_series("pppppppp", sent=5)], 0.0)
    assert heavy.episodes == 1
    assert heavy.partial_seconds == 8
    assert heavy.sustained(3, 2, 5.0)
    assert heavy.ratio == pytest.approx(0.2)


def test_streaks_follow_failed_rounds() -> None:
    s = _series("..xxx")
    assert s.streak == 3
    assert s.failing_for(4.0) == 2.0
    s.add(Round(5.0, True, "", 1, 0, 0.01, None))
    assert (s.streak, s.failing_for(5.0)) == (0, 0.0)


def _timed_out(started: float, timeout: float = 0.8) -> Round:
    """A round that began at ``started`` and was reported lost when its timeout ran out."""
    return Round(started + timeout, False, "timeout", 1, 1, None, None, started=started)


def test_an_outage_runs_from_when_the_failed_rounds_began_and_counts_an_overdue_round() -> None:
    s = TargetSeries(Target("gw", "router", "icmp", "192.168.1.1", interval=1.0, timeout=0.8), keep=60.0)
    s.add(Round(0.01, True, "", 1, 0, 0.002, None, started=0.0))
    s.add(_timed_out(1.0))
    s.add(_timed_out(2.0))  # reported at 2.8
    # At 3.1 the round that began at 3.0 is due but not yet overdue (margin 0.15 s) …
    assert s.outage(3.1, margin=0.15) == (2, 1.0)
    # … at 3.2 it is: three rounds unanswered, 2 s of outage, before its own timeout at 3.8.
    assert s.outage(3.2, margin=0.15) == (3, 2.0)
    # Failures before ``not_before`` are another layer's: only what began since then counts.
    assert s.outage(3.2, margin=0.15, not_before=1.5) == (2, 1.0)
    s.add(Round(3.02, True, "", 1, 0, 0.002, None, started=3.0))  # the answer came: no outage
    assert s.outage(3.2, margin=0.15) == (0, 0.0)


@pytest.mark.parametrize(
    ("role", "path", "layer"),
    [
        ("router", "primary", "router"),
        ("internet", "auto", "internet"),
        ("vpn", "tunnel", "vpn"),
        ("vpn", "primary", "vpn"),
        ("router", "tunnel", "agency"),
        ("internet", "tunnel", "agency"),
        ("dns", "tunnel", "dns"),
        ("cad", "tunnel", "cad"),
        ("vpn", "backup", "backup"),
        ("cad", "backup", "backup"),
    ],
)
def test_roles_and_paths_map_to_layers(role: str, path: str, layer: str) -> None:
    assert target_layer(Target("t", role, "icmp", "192.0.2.1", path=path)) == layer
