"""The command line through click's CliRunner, and `run` as a real process stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from lifeline_agent.cli import main
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_agent.status import read_status
from lifeline_wire import Batch

TESTDATA = Path(__file__).parent / "testdata"


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "ws-3"
position = "3"
state_dir = "{tmp_path}"
token = "t"

[discovery]
default_gateways = false

[metrics]
enabled = false

[schedule]
batch_interval = "500ms"

[[targets]]
name = "cad"
role = "cad"
kind = "tcp"
host = "127.0.0.1"
port = {port}
interval = "200ms"
timeout = "150ms"
{extra}"""
    )
    return path


def test_check_config_lists_every_problem_and_exits_2() -> None:
    result = CliRunner().invoke(main, ["check-config", str(TESTDATA / "invalid-many-problems.toml")])
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines == [
        "agent.id: is required",
        "agent.site: must be a string (got 12)",
        "schedule.batch_interval: must be ≥ 500ms (got '100ms')",
        "targets[0].role: is required (one of link, router, internet, vpn, dns, cad)",
        'targets[0].port: is required for kind = "tcp"',
    ]
    assert "5 problem(s)" in result.stderr


def test_check_config_ok_and_missing_file(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["check-config", str(TESTDATA / "valid-minimal.toml")])
    assert ok.exit_code == 0
    assert "ok" in ok.stdout
    missing = CliRunner().invoke(main, ["check-config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert "(file): not found" in missing.stdout


def test_run_once_prints_the_batch(tmp_path: Path, tcp_listener: tuple[str, int]) -> None:
    config = write_config(tmp_path, tcp_listener[1])
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--once"])
    assert result.exit_code == 0, result.output
    batch = msgspec.json.decode(result.stdout, type=Batch)
    assert (batch.agent_id, batch.seq) == ("ws-3", 0)
    success = [s for s in batch.every_sample() if s.name == "lifeline_probe_success"]
    assert [(s.labels["target"], s.value) for s in success] == [("cad", 1.0)]
    assert not (tmp_path / "spool.db").exists()


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--config", str(TESTDATA / "invalid-bad-role.toml"), "--once"])
    assert result.exit_code == 2
    assert "targets[0].role" in result.stderr


def test_probe_once_debug_shows_samples_and_log(tmp_path: Path, tcp_listener: tuple[str, int]) -> None:
    config = write_config(tmp_path, tcp_listener[1])
    result = CliRunner().invoke(main, ["probe-once", "cad", "--config", str(config), "--debug"])
    assert result.exit_code == 0, result.output
    assert "result    ok" in result.stdout
    assert "lifeline_probe_success{" in result.stdout
    assert "tcp connect" in result.stdout  # the probe's debug log line


def test_probe_once_failed_probe_exits_1_and_unknown_name_exits_2(tmp_path: Path, closed_port: int) -> None:
    config = write_config(tmp_path, closed_port)
    failed = CliRunner().invoke(main, ["probe-once", "cad", "--config", str(config)])
    assert failed.exit_code == 1
    assert "FAILED: refused" in failed.stdout
    unknown = CliRunner().invoke(main, ["probe-once", "nope", "--config", str(config)])
    assert unknown.exit_code == 2
    assert "targets: cad" in unknown.stderr


def test_status_without_a_running_agent_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path, 9)
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1
    assert "is the agent running" in result.stderr


def test_unreadable_token_file_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, 9)
    text = config.read_text().replace('token = "t"', f'token_file = "{tmp_path}/absent.token"')
    config.write_text(text)
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "agent.token_file: cannot read" in result.stderr


@pytest.mark.system
def test_run_until_sigterm_spools_the_last_batch(tmp_path: Path, tcp_listener: tuple[str, int]) -> None:
    config = write_config(tmp_path, tcp_listener[1])
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifeline_agent", "run", "--config", str(config), "--log-level", "debug"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            assert time.monotonic() < deadline, "no status.json"
            try:
                status = read_status(str(tmp_path))
            except (OSError, ValueError):
                status = {}
            if status.get("targets") and status["targets"][0]["rounds"] >= 2:
                break
            time.sleep(0.05)
        shown = CliRunner().invoke(main, ["status", "--config", str(config)])
        assert shown.exit_code == 0, shown.output
        assert "running" in shown.stdout
        assert "cad" in shown.stdout
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "agent.log").read_text()
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    try:
        batches = [item.batch for item in spool.pending(1000)]
    finally:
        spool.close()
    # Priority batches (health state changes) leave the spool first: compare as a set of numbers.
    assert sorted(b.seq for b in batches) == list(range(len(batches)))
    assert max(batches, key=lambda b: b.seq).events[-1].type == "agent.stop"
    assert json.loads((tmp_path / "status.json").read_text())["running"] is False
