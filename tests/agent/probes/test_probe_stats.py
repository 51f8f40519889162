"""The pure arithmetic of probes: RTT summary, RFC 3550 jitter, loss, E-model MOS."""

from __future__ import annotations

import pytest

from lifeline_agent.probes.stats import JitterEstimator, jitter, loss_ratio, mos, r_factor, summarize


@pytest.mark.parametrize(
    ("rtt_ms", "jitter_ms", "loss_percent", "expected"),
    [(50, 10, 0.5, 4.34), (150, 30, 1, 4.05), (200, 40, 2, 3.65), (250, 50, 5, 2.93)],
)
def test_mos_matches_domain_samples(
    rtt_ms: float, jitter_ms: float, loss_percent: float, expected: float
) -> None:
    assert round(mos(rtt_ms / 1000, jitter_ms / 1000, loss_percent / 100), 2) == expected


def test_r_factor_is_clamped() -> None:
    assert r_factor(5000, 500, 50) == 0.0
    assert mos(5.0, 0.5, 0.5) == pytest.approx(1.0)


def test_jitter_follows_rfc3550_recurrence() -> None:
    # D = 10 ms then 10 ms: J1 = 10/16, J2 = J1 + (10 - J1)/16
    j1 = 0.010 / 16
    j2 = j1 + (0.010 - j1) / 16
    assert jitter([0.010, 0.020, 0.010]) == pytest.approx(j2)


def test_jitter_skips_lost_echoes_and_is_zero_without_pairs() -> None:
    assert jitter([0.010, None, 0.020]) == pytest.approx(0.010 / 16)
    assert jitter([0.010]) == 0.0
    assert jitter([None, None]) == 0.0


def test_jitter_estimator_runs_across_rounds() -> None:
    est = JitterEstimator()
    assert not est.primed
    est.update_many([0.010])
    assert est.primed
    assert est.update_many([0.030]) == pytest.approx(0.020 / 16)


def test_constant_rtt_has_no_jitter() -> None:
    assert jitter([0.040] * 50) == 0.0


def test_loss_ratio() -> None:
    assert loss_ratio(5, 5) == 0.0
    assert loss_ratio(4, 1) == 0.75
    assert loss_ratio(0, 0) == 0.0
    assert loss_ratio(3, 0) == 1.0


def test_summarize_ignores_lost_echoes() -> None:
    summary = summarize([0.002, None, 0.004])
    assert summary is not None
    assert (summary.min, summary.avg, summary.max) == (0.002, pytest.approx(0.003), 0.004)
    assert summarize([None, None]) is None
