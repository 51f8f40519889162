"""Any path that works: ordered endpoints, fail-over, the sticky path, fail-back, the backup route."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from delivery_kit import Answer, LoopbackCollector, collector_section, fill, make_shipper, run_until

from lifeline_agent.config import CollectorEndpoint
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_agent.recorder import series_key

ROUTE_HEADER = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"


def route_file(tmp_path: Path, *routes: tuple[str, int]) -> str:
    """A /proc/net/route with a default route per (interface, metric)."""
    lines = [
        f"{iface}\t00000000\t0101A8C0\t0003\t0\t0\t{metric}\t00000000\t0\t0\t0\n" for iface, metric in routes
    ]
    path = tmp_path / "route"
    path.write_text(ROUTE_HEADER + "".join(lines))
    return str(path)


@pytest.fixture
def spool(tmp_path: Path) -> SqliteSpool:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    yield spool  # type: ignore[misc]
    spool.close()


def server_error(_ids: list[tuple[str, int]]) -> Answer:
    return Answer(503, b'{"error": "store unavailable, retry later"}')


def test_a_connect_error_moves_on_to_the_next_endpoint(
    collector: LoopbackCollector, spool: SqliteSpool, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    ids = fill(spool, 5)
    shipper = make_shipper(collector_section(f"http://127.0.0.1:{closed_port}", collector.url), spool)
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.delivery"):
        run_until(shipper, lambda: spool.depth() == 0)
    assert collector.stored == ids
    assert shipper.paths.current is not None
    assert shipper.paths.current.base == collector.url
    assert shipper.stats.failures["network"] >= 1
    assert any(
        f"127.0.0.1:{closed_port} via the default route failed" in r.getMessage() for r in caplog.records
    )


def test_server_errors_past_the_budget_move_on_and_the_working_path_is_kept(
    collector: LoopbackCollector, second_collector: LoopbackCollector, spool: SqliteSpool
) -> None:
    collector.always = server_error
    shipper = make_shipper(
        collector_section(collector.url, second_collector.url),
        spool,
        server_budget=0.2,
        failback_interval=3600.0,
    )
    first = fill(spool, 3)

    async def main() -> tuple[int, list[tuple[str, int]]]:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        while spool.depth():
            await asyncio.sleep(0.01)
        tried = len(collector.requests)
        later = fill(spool, 3, start=3)
        shipper.wake()
        while spool.depth():
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await shipper.aclose()
        return tried, later

    tried_first, later = asyncio.run(main())
    assert tried_first >= 2  # retried within the budget before moving on
    assert shipper.stats.failures["server"] >= 2
    # The path that worked is tried first from then on: the failing endpoint saw no new request.
    assert second_collector.stored == first + later
    assert len(collector.requests) == tried_first
    assert collector.stored == []


def test_fails_back_once_the_preferred_endpoint_answers_again(
    collector: LoopbackCollector, second_collector: LoopbackCollector, spool: SqliteSpool
) -> None:
    collector.always = server_error
    collector.healthy = False
    shipper = make_shipper(
        collector_section(collector.url, second_collector.url),
        spool,
        server_budget=0.0,
        failback_interval=0.1,
    )
    fill(spool, 2)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        while spool.depth() or shipper.paths.current is None:  # acked, then the path noted
            await asyncio.sleep(0.01)
        assert shipper.paths.current is not None
        assert shipper.paths.current.base == second_collector.url
        checks = collector.health_checks
        while collector.health_checks == checks:  # it keeps asking the preferred one
            await asyncio.sleep(0.01)
        collector.always = None
        collector.healthy = True
        while shipper.paths.current.base != collector.url:
            await asyncio.sleep(0.01)
        fill(spool, 2, start=2)
        shipper.wake()
        while spool.depth():
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await shipper.aclose()

    asyncio.run(main())
    assert second_collector.stored == [("boot1", 0), ("boot1", 1)]
    assert collector.stored == [("boot1", 2), ("boot1", 3)]


def test_a_public_endpoint_is_used_only_when_allowed(
    collector: LoopbackCollector, spool: SqliteSpool, closed_port: int
) -> None:
    internal = CollectorEndpoint(f"http://127.0.0.1:{closed_port}")
    public = CollectorEndpoint(collector.url, public=True)
    fill(spool, 2)
    refused = make_shipper(collector_section(internal, public), spool)
    assert refused.endpoints() == [f"http://127.0.0.1:{closed_port}/api/v1/ingest"]
    run_until(refused, lambda: refused.stats.failures["network"] >= 2, limit=5.0)
    assert collector.requests == []
    assert spool.depth() == 2

    allowed = make_shipper(collector_section(internal, public, allow_public=True), spool)
    run_until(allowed, lambda: spool.depth() == 0)
    assert collector.stored == [("boot1", 0), ("boot1", 1)]


def test_each_endpoint_is_tried_by_default_route_then_bound_to_the_backup_interface(tmp_path: Path) -> None:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    try:
        routes = route_file(tmp_path, ("eth0", 100), ("usb0", 600))
        no_backup = CollectorEndpoint("http://b.example", via_backup=False)
        shipper = make_shipper(collector_section("http://a.example", no_backup), spool, route_file=routes)
        assert [(r.base, r.via, r.interface) for r in shipper.paths.routes()] == [
            ("http://a.example", "default", ""),
            ("http://a.example", "backup", "usb0"),
            ("http://b.example", "default", ""),
        ]
        single = make_shipper(
            collector_section("http://a.example"), spool, route_file=route_file(tmp_path, ("eth0", 100))
        )
        assert [r.via for r in single.paths.routes()] == ["default"]  # one way out: nothing to fall back to
        configured = make_shipper(collector_section("http://a.example", backup_interface="wwan0"), spool)
        assert [r.interface for r in configured.paths.routes()] == ["", "wwan0"]
    finally:
        spool.close()


def test_paths_through_what_the_health_model_knows_is_down_go_last(tmp_path: Path) -> None:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    try:
        routes = route_file(tmp_path, ("eth0", 100), ("usb0", 600))
        public = CollectorEndpoint("http://203.0.113.10", public=True)
        shipper = make_shipper(
            collector_section("http://10.20.0.1", public, allow_public=True), spool, route_file=routes
        )
        paths = shipper.paths

        def order() -> list[tuple[str, str]]:
            return [(r.base, r.via) for r in paths.order()]

        assert order() == [
            ("http://10.20.0.1", "default"),
            ("http://10.20.0.1", "backup"),
            ("http://203.0.113.10", "default"),
            ("http://203.0.113.10", "backup"),
        ]
        paths.hint(primary_down=True, tunnel_down=False)  # the ISP is down: the hotspot first
        assert order() == [
            ("http://10.20.0.1", "backup"),
            ("http://203.0.113.10", "backup"),
            ("http://10.20.0.1", "default"),
            ("http://203.0.113.10", "default"),
        ]
        paths.hint(primary_down=False, tunnel_down=True)  # the tunnel is down: the public endpoint first
        assert order()[:2] == [("http://203.0.113.10", "default"), ("http://203.0.113.10", "backup")]
        paths.hint(primary_down=False, tunnel_down=False)
        assert order()[0] == ("http://10.20.0.1", "default")
    finally:
        spool.close()


def test_requests_bound_to_an_interface_really_bind(
    collector: LoopbackCollector, spool: SqliteSpool, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """SO_BINDTODEVICE on real sockets: bound to lo the collector is reached; bound to an interface
    that does not exist, the failure says so and the shipper moves on."""
    ids = fill(spool, 3)
    shipper = make_shipper(collector_section(collector.url, backup_interface="nosuch0"), spool)

    async def main() -> None:
        assert await shipper.ship_once(collector.url + "/api/v1/ingest", interface="lo")
        await shipper.aclose()

    asyncio.run(main())
    assert collector.stored == ids[:3]
    fill(spool, 2, start=3)
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.delivery"):
        section = collector_section(
            f"http://127.0.0.1:{closed_port}", collector.url, backup_interface="nosuch0"
        )
        shipper2 = make_shipper(section, spool)
        run_until(shipper2, lambda: spool.depth() == 0)
    assert collector.stored == [*ids, ("boot1", 3), ("boot1", 4)]
    assert any(
        "bound to nosuch0" in r.getMessage() and "No such device" in r.getMessage() for r in caplog.records
    )


def test_all_paths_down_backs_off_and_keeps_everything(
    spool: SqliteSpool, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    fill(spool, 4)
    shipper = make_shipper(
        collector_section(f"http://127.0.0.1:{closed_port}"), spool, route_file="/nonexistent"
    )
    with caplog.at_level(logging.DEBUG, logger="lifeline_agent.delivery"):
        run_until(shipper, lambda: shipper.stats.failures["network"] >= 4, limit=10.0)
    route = shipper.paths.routes()[0]
    assert shipper.paths.state(route).backoff.attempt >= 4  # each failure waited longer (jittered)
    assert spool.depth() == 4
    blocked = [r for r in caplog.records if "no path to the collector works" in r.getMessage()]
    assert len(blocked) == 1  # logged once per episode, not once per attempt
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "failed:" in r.getMessage()]
    assert len(warned) == 1  # the same error again is only a debug line


def test_live_values_name_the_path_in_use(
    collector: LoopbackCollector, spool: SqliteSpool, closed_port: int
) -> None:
    fill(spool, 1)
    down = f"http://127.0.0.1:{closed_port}"
    shipper = make_shipper(collector_section(down, collector.url), spool)
    run_until(shipper, lambda: spool.depth() == 0)
    values = shipper.live_values()
    info = "lifeline_agent_delivery_path_info"
    assert values == {
        series_key(info, {"endpoint": down, "path": "default"}): 0.0,
        series_key(info, {"endpoint": collector.url, "path": "default"}): 1.0,
    }


class SteppedClock:
    """Wall and monotonic time that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now


def test_a_path_that_goes_away_is_no_longer_shown_in_use(tmp_path: Path, spool: SqliteSpool) -> None:
    clock = SteppedClock()
    routes = route_file(tmp_path, ("eth0", 100), ("usb0", 600))
    shipper = make_shipper(collector_section("http://a.example"), spool, route_file=routes, clock=clock)
    backup = next(r for r in shipper.paths.routes() if r.via == "backup")
    shipper.paths.succeeded(backup)  # delivering over the hotspot
    info = "lifeline_agent_delivery_path_info"
    in_use = series_key(info, {"endpoint": "http://a.example", "path": "backup"})
    assert shipper.live_values()[in_use] == 1.0
    route_file(tmp_path, ("eth0", 100))  # the hotspot is unplugged
    clock.now += 60.0  # past the backup interface's look-up interval
    assert [r.via for r in shipper.paths.routes()] == ["default"]
    # Still listed, at 0: the recorded copy of the series must not keep reading 1.
    assert shipper.live_values()[in_use] == 0.0
