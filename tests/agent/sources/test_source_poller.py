"""The source poller: intervals with and without netlink, absent hardware, providers that come and go."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from lifeline_agent.config import parse
from lifeline_agent.service import AgentService
from lifeline_agent.sources import poller
from lifeline_agent.sources.base import FixtureFile
from lifeline_agent.sources.poller import source_interval
from lifeline_agent.sources.wifi import FixtureBackend, WifiFacts, WifiSource
from lifeline_agent.watchers.netlink import NetlinkWatcher


async def wait_for(condition: Any, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_sources_poll_slowly_only_while_the_netlink_watcher_lives(tmp_path: Path) -> None:
    service = AgentService(parse({"agent": {"id": "pos-1", "state_dir": str(tmp_path)}}))
    assert not service.netlink.watching()
    watcher = NetlinkWatcher(lambda event: None)
    watcher.start()
    service.netlink.watcher = watcher
    try:
        assert service.netlink.watching()
    finally:
        watcher.stop()
    assert not service.netlink.watching()  # a watcher that stopped (or died) announces nothing any more
    names = ("interfaces", "routes", "vpn", "wifi", "cellular")
    assert [source_interval(name, watched=True) for name in names] == [5.0, 5.0, 2.0, 1.0, 5.0]
    # Without netlink nothing would announce a cut: links, routes and the VPN are read every second.
    assert [source_interval(name, watched=False) for name in names] == [1.0, 1.0, 1.0, 1.0, 5.0]


class CountingFixture(FixtureBackend):
    """The real fixture backend, counting reads (the file stands in for a radio that comes and goes)."""

    def __init__(self, fixture: FixtureFile) -> None:
        super().__init__(fixture)
        self.reads = 0

    def read(self) -> list[WifiFacts]:
        self.reads += 1
        return super().read()


class ClosingWifi(WifiSource):
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.mark.system
def test_absent_hardware_is_not_polled_until_its_provider_check_finds_it(
    tmp_path: Path, fake_collector: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "PROVIDER_RECHECK", 0.3)
    radio = tmp_path / "radio.jsonl"
    backend = CountingFixture(FixtureFile(str(radio)))
    wifi = ClosingWifi([backend])
    config = parse(
        {
            "agent": {"id": "ws-8", "state_dir": str(tmp_path), "token": "t0k"},
            "discovery": {"default_gateways": False},
            "providers": {"netlink": False},
            "collector": {"endpoints": [{"url": fake_collector.url}]},
        }
    )
    service = AgentService(config, targets=(), sources=[wifi])

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await wait_for(lambda: "wifi" in service.poller.providers)
            assert service.poller.providers["wifi"][0] is False
            await asyncio.sleep(0.8)  # several 1 s-source turns and provider checks
            assert backend.reads == 0  # absent: checked, never read
            radio.write_text('{"ts_ms": 0, "wifi": {"interface": "wlan0", "signal_dbm": -61}}\n')
            await wait_for(lambda: service.poller.providers["wifi"][0] and "wifi" in service.poller.facts)
            assert service.poller.facts["wifi"].signal_dbm == -61.0
            radio.unlink()  # the adapter is pulled out
            await wait_for(lambda: not service.poller.providers["wifi"][0])
            stopped_at = backend.reads
            await asyncio.sleep(1.5)  # past the next 1 s turn
            assert backend.reads == stopped_at
        finally:
            stop.set()
            await task

    asyncio.run(main())
    assert wifi.closed  # what a source keeps open is released at stop
