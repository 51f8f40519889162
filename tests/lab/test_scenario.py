"""Scenario files: every shipped one loads, bad ones name each problem, a short one runs live."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline_lab import fixtures, impair, scenario
from lifeline_lab.errors import ScenarioError
from lifeline_lab.topology import Lab

pytestmark = pytest.mark.lab

REQUIRED = {
    "primary-cut-failover",
    "cable-pulled-no-failover",
    "blackholed-primary",
    "lte-fade-backup",
    "bufferbloat-survived",
    "loss-spikes-survived",
    "loss-ramp-total",
    "vpn-concentrator-unreachable",
    "cad-server-down",
    "agency-dns-down",
    "home-power-loss",
    "total-cut",
    "blackout-2s-survived",
    "loss-40-burst-survived",
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_shipped_scenarios_load_with_an_expectation(name: str) -> None:
    sc = scenario.load(name)
    assert sc.name == name
    assert sc.steps
    assert sc.expect.layer in scenario.LAYERS
    assert all(step.at <= sc.duration for step in sc.steps)
    # every scenario that breaks something also repairs it before the end
    assert sc.steps[-1].action == "clear"


def test_survivable_scenarios_expect_no_page() -> None:
    for name in (
        "bufferbloat-survived",
        "loss-spikes-survived",
        "lte-fade-backup",
        "agency-dns-down",
        "blackout-2s-survived",
        "loss-40-burst-survived",
    ):
        sc = scenario.load(name)
        assert not sc.expect.cad_lost
        assert not sc.expect.page


def test_ramp_expands_into_equal_steps() -> None:
    sc = scenario.load("loss-ramp-total")
    ramp = [s for s in sc.steps if s.impairment is not None]
    assert len(ramp) == 19
    assert [s.impairment.percent for s in ramp if s.impairment] == [100 * i / 18 for i in range(19)]
    assert ramp[0].at == 10.0
    assert ramp[-1].at == 100.0


def test_power_loss_writes_battery_fixtures() -> None:
    sc = scenario.load("home-power-loss")
    on_battery = [values["power"] for at, values in sc.fixtures if at >= 10]
    assert on_battery[0]["on_ac"] is False
    assert any(s.action == "power-off" for s in sc.steps)


def test_a_bad_scenario_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
description = "broken on purpose"
duration = "20s"
colour = "red"

[expect]
cad_lost = "yes"
layer = "router"
page = false

[[steps]]
at = "5s"
action = "teleport"

[[steps]]
action = "loss"
link = "primary"
percent = 30

[[steps]]
at = "30s"
action = "loss"
link = "wifi"
percent = 10

[[fixtures]]
at = "1s"
power = { on_ac = "maybe", battery_ratio = 1.5 }
""",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as info:
        scenario.load(str(path))
    paths = {p for p, _reason in info.value.problems}
    assert {
        "colour",
        "expect.cad_lost",
        "steps[0].action",
        "steps[1].at",
        "steps[2].at",
        "fixtures[0].power.on_ac",
        "fixtures[0].power.battery_ratio",
    } <= paths, info.value.problems


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="primary-cut-failover"):
        scenario.load("no-such-scenario")


def test_a_short_scenario_runs_in_real_time(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text(
        """
description = "two quick impairments"
duration = "2.5s"
[expect]
cad_lost = false
layer = "link"
page = false
[[steps]]
at = "0.2s"
action = "loss"
link = "primary"
direction = "up"
percent = 30
[[steps]]
at = "1s"
action = "delay"
link = "primary"
direction = "up"
delay_ms = 20
[[fixtures]]
at = "1s"
wifi = { interface = "eth0", signal_dbm = -80 }
""",
        encoding="utf-8",
    )
    sc = scenario.load(str(path))
    lines: list[str] = []
    seen_active: list[set[str]] = []

    def emit(line: str) -> None:
        lines.append(line)
        seen_active.append({i.kind for i in impair.active(lab)})

    result = scenario.run(lab, sc, emit=emit)
    step_lines = [line for line in lines if line.startswith("[+")]
    assert "loss primary up 30 %" in step_lines[0]
    assert "delay primary up 20 ms" in step_lines[1]
    assert {"loss", "delay"} <= set().union(*seen_active)
    assert impair.active(lab) == []  # cleared at the end
    assert not result.cad_lost
    assert lines[-1].startswith("done: CAD lost = false")
    readings = fixtures.read(lab.fixture_path)
    t0 = int(result.started * 1000)
    assert fixtures.at(readings, t0 + 500)["wifi"] == fixtures.HEALTHY["wifi"]
    assert fixtures.at(readings, t0 + 1500)["wifi"] == {"interface": "eth0", "signal_dbm": -80}
    assert fixtures.at(readings, t0 + 1500)["power"] == fixtures.HEALTHY["power"]
