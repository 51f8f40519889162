"""The delay daemon's model: Gilbert parameters and control-file parsing."""

from __future__ import annotations

import random

import pytest

from lifeline_lab.delayd import QueueConfig, gilbert

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(("loss", "burst"), [(0.05, 3.0), (0.2, 5.0), (0.5, 10.0)])
def test_gilbert_gives_the_asked_loss_and_burst_length(loss: float, burst: float) -> None:
    p, r = gilbert(loss, burst)
    assert p / (p + r) == pytest.approx(loss)
    assert 1 / r == pytest.approx(burst)
    rng = random.Random(7)
    bad, lost, runs, run = False, 0, [], 0
    for _ in range(200_000):
        bad = rng.random() >= r if bad else rng.random() < p
        if bad:
            lost += 1
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert lost / 200_000 == pytest.approx(loss, abs=0.01)
    assert sum(runs) / len(runs) == pytest.approx(burst, rel=0.05)


def test_gilbert_edges() -> None:
    assert gilbert(0.0, 5) == (0.0, 1.0)
    assert gilbert(1.0, 5) == (1.0, 0.0)
    p, r = gilbert(0.9, 1.0)  # bursts of one cannot make 90 % loss: they stretch
    assert p / (p + r) == pytest.approx(0.9)


def test_queue_config_from_control_json() -> None:
    cfg = QueueConfig.from_json({"delay_ms": 40, "jitter_ms": 80, "burst_loss_pct": 20, "burst_len": 4})
    assert cfg.delay_s == pytest.approx(0.040)
    assert cfg.jitter_s == pytest.approx(0.040)  # jitter never exceeds the delay
    assert cfg.burst_p / (cfg.burst_p + cfg.burst_r) == pytest.approx(0.2)
    assert QueueConfig.from_json({}) == QueueConfig()
