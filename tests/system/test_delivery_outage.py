"""A collector outage while the agent runs: every sample taken during it arrives, once, with its
own timestamp — in the collector's store and, by remote-write, in a real Prometheus.

Real processes: ``lifeline-collector serve`` (remote-write on, durable cursor), ``lifeline-agent
run`` probing a TCP listener every 500 ms with a batch every second, and ``/usr/bin/prometheus``
with the remote-write receiver and a 30-minute out-of-order window.

Why 60 s and not "several minutes": nothing in the spool or the shipper depends on the length of
an outage except how many batches wait and how long the backoff has grown. At this schedule a
60 s outage leaves 60 batches waiting — what a 5-minute outage leaves at the default 5 s batch
interval — and it is longer than the shipper's longest backoff (30 s), so the agent is in its
steady "collector down" state when the collector returns. The 30-minute backlog at the default
schedule is measured by ``bench/drain_backlog.py``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from delivery_procs import (
    Collector,
    Proc,
    agent_config,
    agent_proc,
    cad_probe,
    free_port,
    loopback_collector,
    spool_batches,
    wait_for,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

PROMETHEUS = "/usr/bin/prometheus"
OUTAGE = 60.0
INTERVAL = 0.5  # probe interval, seconds
SERIES = 'lifeline_probe_success{agent="ws-1",target="cad"}'


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    if not os.path.exists(PROMETHEUS):
        pytest.fail(f"{PROMETHEUS} is missing (run `make apt`)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\n"
    )
    proc = Proc(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
        ],
        tmp_path / "prometheus.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("Prometheus to be ready", lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200)
        yield url
    finally:
        proc.stop()
        shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def prom_query(url: str, query: str, at: float) -> list[dict[str, object]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


@pytest.fixture
def remote_writing(tmp_path: Path, prometheus: str) -> Iterator[tuple[Collector, str, str]]:
    """A collector remote-writing to ``prometheus``, not started yet (collector, URL, agent token).

    The test stops and restarts it; whichever run is last is stopped here, after the test.
    """
    found = loopback_collector(tmp_path / "collector", remote_write_url=f"{prometheus}/api/v1/write")
    try:
        yield found
    finally:
        found[0].stop()


def test_outage_backlog_arrives_once_with_original_timestamps_and_fills_prometheus(
    tmp_path: Path, prometheus: str, remote_writing: tuple[Collector, str, str], cad_listener: int
) -> None:
    collector, url, token = remote_writing
    workdir = tmp_path / "agent"
    config = agent_config(
        workdir,
        token,
        [url],
        [cad_probe(cad_listener, interval="500ms", timeout="200ms")],
        batch_interval="1s",
    )
    collector.start(url)
    agent = agent_proc(config, name="agent-1").start()
    second: Proc | None = None
    try:
        wait_for("the first batches", lambda: sum(len(s) for s in collector.seqs().values()) >= 5)
        (boot,) = collector.seqs()
        collector.stop()
        down_ms = now_ms()
        time.sleep(OUTAGE)
        assert agent.running(), agent.text()
        up_ms = now_ms()
        collector.start(url)
        # The backlog drains, then fresh batches flow: a batch created well after the restart arrived.
        wait_for(
            "the backlog to drain",
            lambda: (
                collector.query("SELECT MAX(created_ms) FROM batches")[0][0] > up_ms + 3000
                and len(spool_batches(workdir / "spool.db")) <= 2
            ),
            timeout=120,
        )
        agent.stop()
        # Whatever the stop left in the spool goes with the next start (a new boot).
        second = agent_proc(config, name="agent-2").start()
        wait_for(
            "the first boot's last batches",
            lambda: not [b for b in spool_batches(workdir / "spool.db") if b[0] == boot],
        )
        second.stop()
    finally:
        agent.stop()
        if second is not None:
            second.stop()

    # Every batch of the first boot is in the store exactly once: 0..k without a gap.
    seqs = collector.seqs()[boot]
    assert seqs == list(range(len(seqs)))
    assert len(seqs) >= OUTAGE  # one a second, through the outage
    assert collector.query("SELECT COUNT(*) FROM boots WHERE max_seq - min_seq + 1 != received") == [(0,)]

    # Every probe round of the outage is there, once, with the time it was measured.
    samples = [(ts, received) for labels, ts, _v, received in collector.samples("lifeline_probe_success")]
    times = [ts for ts, _received in samples]
    assert len(times) == len(set(times)), "a sample was stored twice"
    during = [(ts, received) for ts, received in samples if down_ms <= ts < up_ms]
    assert len(during) >= 0.9 * OUTAGE / INTERVAL
    assert all(received >= up_ms for _ts, received in during)  # they came late, after the restart
    window = [ts for ts in times if down_ms - 3000 <= ts <= up_ms + 3000]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    # Rounds are 500 ms apart; one lost batch (a second of rounds) would leave a 1500 ms hole.
    assert max(gaps) <= 1200, f"a hole in the probe series: {max(gaps)} ms"

    # Prometheus, fed by the collector's remote-write, has the same samples at the same times.
    start_ms, end_ms = down_ms - 2000, up_ms + 2000
    in_store = len([ts for ts in times if start_ms < ts <= end_ms])

    def prometheus_has_them() -> bool:
        result = prom_query(prometheus, f"count_over_time({SERIES}[{end_ms - start_ms}ms])", end_ms / 1000)
        return len(result) == 1 and int(float(result[0]["value"][1])) == in_store  # type: ignore[index]

    wait_for("Prometheus to hold every sample of the outage", prometheus_has_them, timeout=60)
    # And no second of the outage is empty there: a range query at the agent's interval.
    body = httpx.get(
        f"{prometheus}/api/v1/query_range",
        params={
            "query": f"count_over_time({SERIES}[1s])",
            "start": f"{(down_ms + 1000) / 1000:.3f}",
            "end": f"{up_ms / 1000:.3f}",
            "step": f"{INTERVAL:g}",
        },
        timeout=10,
    ).json()
    (series,) = body["data"]["result"]
    points = series["values"]
    expected = int((up_ms - down_ms - 1000) / 1000 / INTERVAL) + 1
    assert len(points) >= expected - 1, "a step of the outage has no sample in Prometheus"
    assert all(float(value) >= 1 for _t, value in points)
