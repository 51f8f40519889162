"""`lifeline-lab` as a new user drives it: up, status, impair, clear, down; usage errors exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifeline_lab import scenario
from lifeline_lab.cli import main
from lifeline_lab.layout import ADDR
from lifeline_lab.measure import fping
from lifeline_lab.testing import leftovers, require_lab, unique_prefix
from lifeline_lab.topology import Lab

pytestmark = pytest.mark.lab


def test_scenarios_lists_every_shipped_scenario() -> None:
    result = CliRunner().invoke(main, ["scenarios"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == scenario.shipped()
    assert len(lines) >= 11
    assert "INVALID" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["impair", "primary", "teleport"], "kind"),
        (["impair", "primary", "loss", "--percent", "150"], "percent"),
        (["impair", "primary"], "usage"),
        (["impair", "cad-down", "now"], "usage"),
        (["impair", "primary", "delay", "--ms", "10", "--jitter", "20"], "jitter_ms"),
    ],
)
def test_bad_impairments_are_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*args, "--state-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_commands_without_a_lab_say_so(tmp_path: Path) -> None:
    require_lab()
    for args in (["status"], ["down"], ["impair", "clear"], ["run", "cad-server-down"]):
        result = CliRunner().invoke(main, [*args, "--prefix", "none-", "--state-dir", str(tmp_path)])
        assert result.exit_code == 1, (args, result.output)
        assert "no lab with prefix 'none-'" in result.output


def test_up_impair_status_down(tmp_path: Path) -> None:
    require_lab()
    prefix = unique_prefix("cli")
    common = ["--prefix", prefix, "--state-dir", str(tmp_path)]
    runner = CliRunner()
    up = runner.invoke(main, ["up", *common, "--no-cadsim"])
    lab = None
    try:
        assert up.exit_code == 0, up.output
        assert f"{prefix}laptop" in up.output
        lab = Lab.attach(prefix, str(tmp_path))
        applied = runner.invoke(
            main, ["impair", "primary", "delay", "--ms", "30", "--direction", "up", *common]
        )
        assert applied.exit_code == 0, applied.output
        assert "delay primary up 30 ms" in applied.output
        median = fping(lab, "laptop", ADDR.router, count=20).median
        assert median is not None
        assert 29.0 <= median <= 31.5
        status = runner.invoke(main, ["status", *common])
        assert status.exit_code == 0, status.output
        assert "delay primary up 30 ms" in status.output
        assert "last handshake" in status.output
        as_json = json.loads(runner.invoke(main, ["status", "--json", *common]).output)
        assert as_json["links"]["primary"]["near_state"] == "UP"
        cleared = runner.invoke(main, ["impair", "clear", *common])
        assert cleared.exit_code == 0
        assert "cleared 1 impairment(s)" in cleared.output
        median = fping(lab, "laptop", ADDR.router, count=20).median
        assert median is not None
        assert median < 5.0
        lab = Lab.attach(prefix, str(tmp_path))  # the processes as `down` will see them
    finally:
        down = runner.invoke(main, ["down", *common])
    assert down.exit_code == 0, down.output
    assert lab is not None
    assert leftovers(lab) == []
