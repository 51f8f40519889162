"""A cable pull seen by netlink makes the agent record the event and re-probe at once.

The agent runs as a real process inside its own network namespace (as the lab runs it:
``ip netns exec <ns> lifeline-agent run``), with a veth to a second namespace standing in for the
home router. The discovered gateway target gets a one-hour interval, so a round right after the
pull comes from the re-probe, not from the schedule (the first scheduled round lands at a random
point of that hour).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_agent.status import read_status

pytestmark = [
    pytest.mark.lab,
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    laptop, router = f"llint-{os.getpid()}-l", f"llint-{os.getpid()}-r"
    try:
        ip("netns", "add", laptop)
        ip("netns", "add", router)
        ip("link", "add", "eth0", "netns", laptop, "type", "veth", "peer", "name", "lan0", "netns", router)
        for ns, dev, addr in ((laptop, "eth0", "10.77.0.1/30"), (router, "lan0", "10.77.0.2/30")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", laptop, "route", "add", "default", "via", "10.77.0.2", "dev", "eth0", "metric", "100")
        yield laptop, router
    finally:
        for ns in (laptop, router):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=30)


def wait_until(
    condition: Any, what: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 30.0
) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{what}; agent log:\n{log.read_text()}"
        time.sleep(0.05)


def log_records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def status_of(state_dir: Path) -> dict[str, Any]:
    try:
        return read_status(str(state_dir))
    except (OSError, ValueError):
        return {}


def test_cable_pull_is_recorded_and_reprobed(tmp_path: Path, namespaces: tuple[str, str]) -> None:
    laptop, router = namespaces
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "lab-1"
state_dir = "{tmp_path}"
token = "t"
log_format = "json"

[schedule]
default_interval = "1h"

[metrics]
enabled = false

[providers]
wifi = "off"
cellular = "off"
power = "off"
traceroute = false
desktop_notify = false
"""
    )
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                laptop,
                sys.executable,
                "-m",
                "lifeline_agent",
                "run",
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: status_of(tmp_path).get("providers", {}).get("netlink", {}).get("available"),
            "the netlink watcher did not start",
            proc,
            log,
        )
        assert [t["name"] for t in status_of(tmp_path)["targets"]] == ["gw-eth0"]
        ip("-n", router, "link", "set", "lan0", "down")  # the cable is pulled at the router
        wait_until(
            lambda: any("gw-eth0" in str(r.get("reprobe", "")) for r in log_records(log)),
            "no re-probe after the link went down",
            proc,
            log,
        )
        wait_until(
            lambda: status_of(tmp_path)["targets"][0]["rounds"] >= 1,
            "the re-probe did not run",
            proc,
            log,
        )
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()

    spool = SqliteSpool(str(tmp_path / "spool.db"))
    try:
        batches = [item.batch for item in spool.pending(1000)]
    finally:
        spool.close()
    events = [e for b in batches for e in b.events]
    pulls = [e for e in events if e.type == "link.changed" and e.attributes["interface"] == "eth0"]
    assert pulls
    assert pulls[0].attributes["action"] == "down"
    assert pulls[0].attributes["carrier"] is False
    rounds = [
        s
        for b in batches
        for s in b.every_sample()
        if s.name == "lifeline_probe_success" and s.labels["target"] == "gw-eth0"
    ]
    assert rounds
    assert rounds[0].value == 0.0  # probed after the pull: the router no longer answers
    assert rounds[0].ts_ms >= pulls[0].ts_ms
