"""The spool bound reached by a real agent: the oldest batches go, the drop is counted (and reaches
the collector as a metric), it is logged once, and the agent keeps running and delivering.

The agent (``lifeline-agent run``, a TCP probe every 100 ms, a batch every 0.5 s, ``spool.max_bytes
= 100KB``, the smallest the config allows) reports to a port where no collector listens yet; once
the agent has counted drops, ``lifeline-collector serve`` starts on that port.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from delivery_procs import (
    agent_config,
    agent_proc,
    cad_probe,
    loopback_collector,
    spool_batches,
    status,
    wait_for,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

BOUND = 100_000


def test_spool_bound_drops_the_oldest_counts_them_and_the_agent_carries_on(
    tmp_path: Path, cad_listener: int
) -> None:
    collector, url, token = loopback_collector(tmp_path / "collector")
    workdir = tmp_path / "agent"
    config = agent_config(
        workdir,
        token,
        [url],
        [cad_probe(cad_listener, interval="100ms", timeout="50ms")],
        batch_interval="0.5s",
        spool_max_bytes="100KB",
    )
    agent = agent_proc(config).start()
    try:
        wait_for("drops", lambda: status(workdir)["spool"]["dropped"] >= 5, timeout=120)
        waiting = spool_batches(workdir / "spool.db")
        # The oldest ordinary batches went; state changes (priority) outlive them.
        assert min(seq for _boot, seq, _n, priority in waiting if not priority) > 0
        collector.start(url)
        wait_for("the spool to drain", lambda: status(workdir)["spool"]["batches"] <= 1, timeout=120)
        assert agent.running(), agent.text()
        dropped = status(workdir)["spool"]["dropped"]

        def reported() -> float:
            rows = collector.samples("lifeline_agent_spool_dropped_batches_total")
            return max((value for _labels, _ts, value, _received in rows), default=0.0)

        # A drop during the drain is counted in a batch cut after it: wait for that batch.
        wait_for("the drop count to reach the collector", lambda: reported() >= dropped, timeout=60)
    finally:
        agent.stop()
        collector.stop()

    (boot,) = collector.seqs()
    stored = collector.seqs()[boot]
    missing = sorted(set(range(max(stored) + 1)) - set(stored))
    assert missing, "nothing was dropped"
    ordinary = [seq for (seq,) in collector.query("SELECT seq FROM batches WHERE priority = 0 ORDER BY seq")]
    assert max(missing) < min(ordinary)  # only the oldest went, and no hole later
    assert len(missing) <= dropped  # the agent counted every batch it dropped
    # The count reached the collector with the batches that followed, so IT sees it.
    counted = collector.samples("lifeline_agent_spool_dropped_batches_total")
    assert max(value for _labels, _ts, value, _received in counted) >= len(missing)
    log = agent.text()
    assert log.count("is over its bound") == 1, "one warning per episode, not one per batch"
    assert "spool.max_bytes = 100000 bytes" in log
