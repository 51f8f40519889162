"""Two real `lifeline-collector serve` processes over one PostgreSQL: one leads, the other stands
by; `kill -9` of the leader during a position's outage → the page arrives exactly once, at a
webhook receiver and through a real two-node Alertmanager cluster, and the collector that took
over resolves it."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from collector_kit import Receiver, cad_round, envelope, free_port, running_receiver

sys.path.insert(0, str(Path(__file__).parent / "notify"))
from notify_kit import ALERTMANAGER, running_alertmanager

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which(ALERTMANAGER) is None, reason="prometheus-alertmanager is not installed"),
]

BIN = Path(sys.executable).parent / "lifeline-collector"


def _config(directory: Path, port: int, dsn: str, hook: str, alertmanagers: list[str]) -> Path:
    directory.mkdir()
    path = directory / "collector.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        # path: where this collector keeps its own files (the heartbeat secret) beside the database
        f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\npath = "{directory / "lifeline.db"}"\n'
        '[heartbeat]\nlisten = "127.0.0.1:0"\n'
        '[alerting]\nsilent_after = "2s"\nevaluate_interval = "200ms"\nresolve_hold = "1s"\n'
        '[auth]\nread_access = "open"\n'
        f'[[notifiers]]\nkind = "webhook"\nname = "pager"\nurl = "{hook}"\n'
        f'[[notifiers]]\nkind = "alertmanager"\nname = "am"\nurl = {json.dumps(alertmanagers)}\n'
    )
    return path


def _wait(condition: object, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, f"{what}: the collector ended\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()}"
        time.sleep(0.05)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


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
    ports = free_port(), free_port()
    configs = [
        _config(tmp_path / name, port, postgres_dsn, receiver.url, alertmanagers)
        for name, port in zip("ab", ports, strict=True)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    token = subprocess.run(
        [BIN, "agents", "add", "pos-7", "--site", "east", "--position", "7", "--config", configs[0]],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for config, log in zip(configs, logs, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [BIN, "serve", "--config", config, "--log-level", "info"], stdout=out, stderr=out
                    )
                )
            if not processes[1:]:
                _wait(lambda: _up(bases[0]), "the first collector did not start", processes[0], logs[0])
        leader, standby = processes
        _wait(
            lambda: "standing by" in logs[1].read_text(), "the second one did not stand by", standby, logs[1]
        )
        assert not _up(bases[1])

        def report(base: str, seq: int) -> None:
            now_ms = int(time.time() * 1000)
            body = envelope("pos-7", (seq, cad_round(now_ms, True, 0)), sent_ms=now_ms)
            answer = httpx.post(
                f"{base}/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 200, answer.text

        report(bases[0], 0)
        assert receiver.got.wait(30), "no page for the silent position"  # the agent went dark
        assert [body["status"] for body in receiver.bodies()] == ["firing"]
        assert am_hook.got.wait(30), "no notification from the Alertmanager cluster"

        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        killed = time.monotonic()
        _wait(lambda: _up(bases[1]), "the standby did not take over", standby, logs[1])
        print(f"takeover after kill -9: {time.monotonic() - killed:.2f} s (loaded machine)")
        assert "leading (epoch 2)" in logs[1].read_text()
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
            report(bases[1], seq)
            seq += 1
            time.sleep(0.3)
        assert [body["status"] for body in receiver.bodies()] == ["firing", "resolved"]
        assert [body["status"] for body in am_hook.bodies()] == ["firing", "resolved"]
        assert {body["alerts"][0]["labels"]["alertname"] for body in receiver.bodies()} == {"PositionSilent"}
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
