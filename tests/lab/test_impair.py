"""Each impairment measurably does what it says, checked with fping (always with -t)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline_lab import impair
from lifeline_lab.errors import ImpairmentError
from lifeline_lab.layout import ADDR
from lifeline_lab.measure import PingResult, fping
from lifeline_lab.topology import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with no impairment."""
    lab: Lab | None = request.getfixturevalue("lab") if "lab" in request.fixturenames else None
    if lab is not None:
        impair.clear(lab)
    yield
    if lab is not None:
        impair.clear(lab)


def base_rtt(lab: Lab, dst: str) -> float:
    median = fping(lab, "laptop", dst, count=50, period_ms=5).median
    assert median is not None
    return median


def test_delay_40ms_gives_a_40ms_median(lab: Lab) -> None:
    base = base_rtt(lab, ADDR.router)
    impair.apply(lab, impair.make("delay", "primary", "up", delay_ms=40))
    result = fping(lab, "laptop", ADDR.router, count=200, period_ms=10)
    assert result.loss == 0.0
    assert result.median is not None
    assert abs(result.median - (40.0 + base)) <= 1.0, result.median
    # both directions: 40 ms each way
    impair.apply(lab, impair.make("delay", "primary", "both", delay_ms=40))
    both = fping(lab, "laptop", ADDR.router, count=50, period_ms=10)
    assert both.median is not None
    assert abs(both.median - (80.0 + base)) <= 1.5, both.median


def test_jitter_spreads_rtt_around_the_delay(lab: Lab) -> None:
    base = base_rtt(lab, ADDR.router)
    impair.apply(lab, impair.make("delay", "primary", "up", delay_ms=40, jitter_ms=10))
    # One echo every 20 ms, as long as the 20 ms the jitter spans: the queue's first-in-first-out
    # order (jitter does not reorder) then holds no echo back behind an earlier one. At 5 ms
    # apart it would, and the median would sit ~2 ms above 40 by design (a simulation of the
    # queue: 40.6-42.8 ms over 200 runs of 300 echoes), too close to any fixed bound.
    result = fping(lab, "laptop", ADDR.router, count=300, period_ms=20)
    p5, p95 = result.percentile(5), result.percentile(95)
    assert p5 is not None
    assert p95 is not None
    assert result.median is not None
    # uniform 30-50 ms: p5 ≈ 31, p95 ≈ 49, median ≈ 40 (±1.3 from sampling 300 echoes)
    assert 29.0 <= p5 - base <= 35.0, p5
    assert 45.0 <= p95 - base <= 51.5, p95
    assert abs(result.median - base - 40.0) <= 3.0, result.median


def test_delay_changes_while_traffic_flows(lab: Lab) -> None:
    impair.apply(lab, impair.make("delay", "primary", "up", delay_ms=20))
    out: list[PingResult] = []
    pinger = threading.Thread(target=lambda: out.append(fping(lab, "laptop", ADDR.router, 300, 10)))
    pinger.start()
    time.sleep(1.0)
    impair.apply(lab, impair.make("delay", "primary", "up", delay_ms=60))
    pinger.join()
    rtts = out[0].received
    assert len(rtts) == 300  # nothing lost while reconfiguring
    # the first half second ran at 20 ms, the last at 60 ms (medians: one slow echo on a busy
    # machine must not decide the test)
    assert abs(statistics.median(rtts[:50]) - 20) < 1.5
    assert abs(statistics.median(rtts[-50:]) - 60) < 1.5


def test_random_loss_30_percent(lab: Lab) -> None:
    impair.apply(lab, impair.make("loss", "primary", "up", percent=30))
    seen0, dropped0 = impair.counters(lab, "primary", "up")
    result = fping(lab, "laptop", ADDR.router, count=1000, period_ms=3)
    seen1, dropped1 = impair.counters(lab, "primary", "up")
    # binomial: σ = 1.45 pp over 1000 echoes, so ±7 pp is a 5σ band
    assert 0.23 <= result.loss <= 0.37, result.loss
    # the lab's own counters saw the same echoes (plus perhaps an ARP-free stray packet)
    assert seen1 - seen0 >= 1000
    assert abs((dropped1 - dropped0) - round(result.loss * 1000)) <= 3


def test_loss_at_the_ends_of_the_range(lab: Lab) -> None:
    # 100 % (the last step of a ramp) drops everything; 0 % drops nothing.
    impair.apply(lab, impair.make("loss", "primary", "up", percent=100))
    assert fping(lab, "laptop", ADDR.router, count=50, period_ms=5).loss == 1.0
    impair.clear(lab)
    impair.apply(lab, impair.make("loss", "primary", "up", percent=0))
    assert fping(lab, "laptop", ADDR.router, count=50, period_ms=5).loss == 0.0
    impair.clear(lab)


def test_burst_loss_comes_in_bursts(lab: Lab) -> None:
    impair.apply(lab, impair.make("burst-loss", "primary", "up", percent=20, burst_len=5))
    result = fping(lab, "laptop", ADDR.router, count=1000, period_ms=3)
    assert 0.10 <= result.loss <= 0.30, result.loss
    runs, current = [], 0
    for rtt in result.rtts:
        if rtt is None:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    mean_run = sum(runs) / len(runs)
    assert mean_run >= 3.0, mean_run  # independent 20 % loss would give runs of 1.25 on average


def test_blackhole_drops_everything_and_keeps_the_link_up(lab: Lab) -> None:
    impair.apply(lab, impair.make("blackhole", "broadband", "both"))
    assert fping(lab, "laptop", ADDR.internet, count=20, timeout_ms=300).loss == 1.0
    assert lab.link_state(lab.link("broadband").near) == "UP"
    assert fping(lab, "laptop", ADDR.router, count=5).loss == 0.0  # the home LAN still works
    impair.clear(lab)
    assert fping(lab, "laptop", ADDR.internet, count=20).loss == 0.0


def test_rate_limit_makes_bufferbloat_under_an_upload(lab: Lab) -> None:
    impair.apply(lab, impair.make("rate", "broadband", "up", rate_kbit=2000, latency_ms=300))
    idle = fping(lab, "laptop", ADDR.internet, count=20, period_ms=50)
    upload = lab.start_upload(8)
    time.sleep(1.5)
    loaded = fping(lab, "laptop", ADDR.internet, count=40, period_ms=100)
    upload.wait(timeout=30)
    sink_log = lab.procs["load-sink"].log
    deadline = time.monotonic() + 10  # the sink reports once the queued tail has drained
    while "received" not in Path(sink_log).read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "the load sink never reported the upload"
        time.sleep(0.1)
    report = json.loads(Path(sink_log).read_text(encoding="utf-8").strip().splitlines()[-1])
    lab.stop_process("upload")
    lab.stop_process("load-sink")
    assert idle.median is not None
    assert loaded.median is not None
    assert idle.median < 5.0
    assert loaded.median > idle.median + 20.0, (idle.median, loaded.median)
    assert 1600 <= report["kbit_s"] <= 2100, report  # the upload got the configured rate


def test_cable_pull_and_link_down_differ(lab: Lab) -> None:
    primary = lab.link("primary")
    impair.apply(lab, impair.make("cable-pull", "primary"))
    assert lab.link_state(primary.near) == "NO-CARRIER"
    assert lab.link_state(primary.far) == "DOWN"
    routes = lab.exec("laptop", ["ip", "route", "show", "default"]).stdout
    assert "dev eth0" in routes
    assert "linkdown" in routes
    assert fping(lab, "laptop", ADDR.internet, count=5, timeout_ms=300).loss == 1.0
    impair.clear(lab)

    impair.apply(lab, impair.make("link-down", "primary"))
    assert lab.link_state(primary.near) == "DOWN"
    assert lab.link_state(primary.far) == "NO-CARRIER"
    routes = lab.exec("laptop", ["ip", "route", "show", "default"]).stdout
    assert "dev eth0" not in routes  # the kernel removed it: traffic fails over to the hotspot
    assert "dev usb0" in lab.exec("laptop", ["ip", "-o", "route", "get", ADDR.internet]).stdout
    assert fping(lab, "laptop", ADDR.internet, count=5).loss == 0.0
    impair.clear(lab)
    assert "dev eth0" in lab.exec("laptop", ["ip", "-o", "route", "get", ADDR.internet]).stdout


def test_vpn_block_cuts_the_tunnel_not_the_internet(lab: Lab) -> None:
    impair.apply(lab, impair.make("vpn-block"))
    assert fping(lab, "laptop", ADDR.cad_server, count=10, timeout_ms=300).loss == 1.0
    assert fping(lab, "laptop", ADDR.internet, count=10).loss == 0.0
    assert fping(lab, "laptop", ADDR.vpnhub_public, count=10).loss == 0.0
    impair.clear(lab)
    deadline = time.monotonic() + 15
    while fping(lab, "laptop", ADDR.cad_server, count=5).loss > 0.0:
        assert time.monotonic() < deadline, "the tunnel did not come back after vpn-block was cleared"


def test_power_off_takes_the_router_down_and_back(lab: Lab) -> None:
    impair.apply(lab, impair.make("power-off", "homerouter"))
    assert lab.link_state(lab.link("primary").far) == "DOWN"
    assert lab.link_state(lab.link("broadband").near) == "DOWN"
    assert lab.link_state(lab.link("primary").near) == "NO-CARRIER"
    impair.clear(lab)
    assert "default via" in lab.exec("homerouter", ["ip", "route", "show", "default"]).stdout
    assert fping(lab, "laptop", ADDR.internet, count=5).loss == 0.0


def test_impairments_combine_and_clear_one_by_one(lab: Lab) -> None:
    impair.apply(lab, impair.make("delay", "primary", "up", delay_ms=30))
    impair.apply(lab, impair.make("loss", "primary", "both", percent=10))
    assert {i.kind for i in impair.active(lab)} == {"delay", "loss"}
    assert lab.process_alive("delayd-homerouter")
    assert impair.clear(lab, "primary", "delay") == 1
    assert not lab.process_alive("delayd-homerouter")  # no delay left in that namespace
    assert [(i.kind, i.direction) for i in impair.active(lab)] == [("loss", "up"), ("loss", "down")]
    rules = lab.exec("homerouter", ["iptables", "-t", "raw", "-S", "PREROUTING"]).stdout
    assert "NFQUEUE" not in rules
    result = fping(lab, "laptop", ADDR.router, count=50, period_ms=5)
    assert result.median is not None
    assert result.median < 5.0


def test_bad_impairments_name_the_field() -> None:
    with pytest.raises(ImpairmentError, match="delay_ms"):
        impair.make("delay", "primary", delay_ms=-5)
    with pytest.raises(ImpairmentError, match="jitter_ms"):
        impair.make("delay", "primary", delay_ms=10, jitter_ms=20)
    with pytest.raises(ImpairmentError, match="percent"):
        impair.make("loss", "primary", percent=120)
    with pytest.raises(ImpairmentError, match="kind"):
        impair.make("netem", "primary")
    with pytest.raises(ImpairmentError, match="direction"):
        impair.make("loss", "primary", "sideways", percent=1)
    with pytest.raises(ImpairmentError, match="node"):
        impair.make("power-off", "isp")
    with pytest.raises(ImpairmentError, match="mode"):
        impair.make("dns-fail", mode="slow")
    with pytest.raises(ImpairmentError, match="link"):
        impair.apply(Lab("x-"), impair.make("loss", "wifi", percent=1))
