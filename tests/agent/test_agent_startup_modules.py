"""What a running agent loads: on a machine without Wi-Fi, no pyroute2 (~8 MB of RSS, 190 modules).

The agent's start-up path (sources built and checked, the netlink watcher subscribed, the loops
running) runs in a fresh interpreter, which then reports its providers and ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifeline_agent.sources.wifi import SYS_CLASS_IEEE80211

pytestmark = pytest.mark.system

RUN_AGENT = """
import asyncio, json, sys
from lifeline_agent.config import parse
from lifeline_agent.service import AgentService

service = AgentService(parse({
    "agent": {"id": "pos-1", "state_dir": sys.argv[1], "token": "t"},
    "metrics": {"enabled": False},
    "targets": [{"name": "gw", "role": "router", "kind": "icmp", "host": "127.0.0.1", "interval": "200ms"}],
}))

async def main() -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    while service.netlink.watcher is None or service.status()["targets"][0]["rounds"] < 2:
        assert not running.done(), "the agent stopped early"
        await asyncio.sleep(0.05)
    stop.set()
    await running

asyncio.run(main())
print(json.dumps({
    "providers": {name: ok for name, (ok, _reason) in service.poller.providers.items()},
    "pyroute2": sorted(m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")),
}))
"""


def _radios() -> bool:
    try:
        return any(True for _ in os.scandir(SYS_CLASS_IEEE80211))
    except OSError:
        return False


def test_a_running_agent_without_wifi_never_imports_pyroute2(tmp_path: Path) -> None:
    if _radios():
        pytest.skip("this machine has a Wi-Fi radio: nl80211 rightly loads pyroute2")
    done = subprocess.run(
        [sys.executable, "-c", RUN_AGENT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["providers"]["netlink"] is True  # the watcher ran, on the raw reader
    assert report["providers"]["interfaces"] is True
    assert report["providers"]["wifi"] is False
    assert report["pyroute2"] == []
