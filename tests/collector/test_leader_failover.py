"""Two real `lifeline-collector serve` processes over one PostgreSQL: both serve, one leads
alerting; `kill -9` of the leader during a position's outage → the page arrives exactly once, at a
webhook receiver and through a real two-node Alertmanager cluster, and the collector that took
over resolves it."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from collector_kit import Receiver, free_port, running_receiver
from collectors_kit import add_agent, collectors, report

sys.path.insert(0, str(Path(__file__).parent / "notify"))
from notify_kit import ALERTMANAGER, running_alertmanager

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which(ALERTMANAGER) is None, reason="prometheus-alertmanager is not installed"),
]


@contextlib.contextmanager
def _alertmanager_pair(tmp_path: Path, hook: str) -> Iterator[list[str]]:
    routing = (
        "route:\n  receiver: hook\n  group_by: [alertname, agent]\n  group_wait: 0s\n"
        "  group_interval: 1s\n  repeat_interval: 1h\n"
        f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n"
    )
    gossip = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        urls = []
        for index, (own, peer) in enumerate((gossip, gossip[::-1])):
            (tmp_path / f"am{index}").mkdir()
            urls.append(
                stack.enter_context(
                    running_alertmanager(tmp_path / f"am{index}", config_text=routing, cluster=(own, [peer]))
                )
            )
        deadline = time.monotonic() + 30
        while not all(
            len(httpx.get(f"{url}/api/v2/status").json()["cluster"].get("peers") or []) == 2 for url in urls
        ):
            assert time.monotonic() < deadline, "the two Alertmanagers never formed a cluster"
            time.sleep(0.1)
        yield urls


def test_kill_9_of_the_leader_costs_no_page_and_sends_none_twice(
    tmp_path: Path, postgres_dsn: str, receiver: Receiver
) -> None:
    with running_receiver() as am_hook, _alertmanager_pair(tmp_path, am_hook.url) as alertmanagers:
        _failover(tmp_path, postgres_dsn, receiver, am_hook, alertmanagers)


def _failover(
    tmp_path: Path, postgres_dsn: str, receiver: Receiver, am_hook: Receiver, alertmanagers: list[str]
) -> None:
    with collectors(tmp_path, postgres_dsn, 2, hook=receiver.url, alertmanagers=alertmanagers) as group:
        leader, other = group
        token = add_agent(leader.config, "pos-7")
        assert other.up()  # it serves,
        assert not other.leads()  # and leaves alerting to the leader
        assert report(leader.base, token, "pos-7", 0).status_code == 200
        assert receiver.got.wait(30), "no page for the silent position"  # the agent went dark
        assert [body["status"] for body in receiver.bodies()] == ["firing"]
        assert am_hook.got.wait(30), "no notification from the Alertmanager cluster"

        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        killed = time.monotonic()
        other.wait(lambda: other.leads(2), "the other collector did not take over")
        print(f"takeover after kill -9: {time.monotonic() - killed:.2f} s (loaded machine)")
        # The position is still dark: the new leader holds the alert it read back, and pages nobody
        # again over several evaluations and another silent_after.
        # The second Alertmanager has waited out its peer timeout (2 s) by now as well.
        time.sleep(3)
        assert [body["status"] for body in receiver.bodies()] == ["firing"]
        assert [body["status"] for body in am_hook.bodies()] == ["firing"]

        seq = 1
        deadline = time.monotonic() + 30
        # The agent is back, through the collector that leads now.
        while len(receiver.requests) < 2 or len(am_hook.requests) < 2:
            assert time.monotonic() < deadline, "the new leader did not resolve the page"
            assert report(other.base, token, "pos-7", seq).status_code == 200
            seq += 1
            time.sleep(0.3)
        assert [body["status"] for body in receiver.bodies()] == ["firing", "resolved"]
        assert [body["status"] for body in am_hook.bodies()] == ["firing", "resolved"]
        assert {body["alerts"][0]["labels"]["alertname"] for body in receiver.bodies()} == {"PositionSilent"}
