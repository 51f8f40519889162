"""The shipped Prometheus config and rules pass promtool, and their unit tests pass."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text(encoding="utf-8"))
    return [rule | {"group": group["name"]} for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_config() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    # The config names both rule files, so check config read and checked them too.
    assert "SUCCESS: 2 rule files found" in done.stdout


def test_promtool_check_rules() -> None:
    files = sorted(str(p.relative_to(PROM)) for p in (PROM / "rules").glob("*.yml"))
    assert files == ["rules/alerts.yml", "rules/recording.yml"]
    done = promtool("check", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules() -> None:
    tests = sorted(str(p.relative_to(PROM)) for p in (PROM / "tests").glob("*.yml"))
    assert len(tests) >= 3
    done = promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)


def test_promtool_test_rules_catches_a_wrong_threshold(tmp_path: Path) -> None:
    # The unit tests pin the thresholds: CAD paging at 3 failed rounds moved to 4 must fail them.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    alerts = copy / "rules" / "alerts.yml"
    text = alerts.read_text(encoding="utf-8")
    assert text.count('{role="cad"} >= 3\n') == 1
    alerts.write_text(text.replace('{role="cad"} >= 3\n', '{role="cad"} >= 4\n'), encoding="utf-8")
    done = promtool("test", "rules", "tests/alerts_test.yml", cwd=copy)
    assert done.returncode != 0
    assert "CadTargetUnreachable" in done.stdout + done.stderr


def test_every_alert_is_unit_tested() -> None:
    tested = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names == tested, f"alerts without a firing unit test: {sorted(names - tested)}"


def test_every_recording_rule_is_unit_tested() -> None:
    recorded = set()
    for group in yaml.safe_load((PROM / "rules" / "recording.yml").read_text(encoding="utf-8"))["groups"]:
        recorded.update(rule["record"] for rule in group["rules"])
    tested = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            tested.update(check["expr"] for check in case.get("promql_expr_test", []))
    assert recorded <= tested, f"recording rules without a unit test: {sorted(recorded - tested)}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_alert_labels_and_words(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict)
    assert isinstance(annotations, dict)
    assert labels["severity"] in {"critical", "warning"}
    assert annotations["summary"]
    assert annotations["description"]
    if rule["group"] == "lifeline-positions":
        # A supervisor reads which position first.
        assert str(annotations["summary"]).startswith("Position {{ $labels.agent }} ({{ $labels.site }})")


# The home's own warnings: a fleet incident (an agency-side cause) does not explain them, so they
# still go out behind it, from Alertmanager as from the collector (incidents.INHIBITABLE).
HOME_WARNINGS = {"FailoverNotReady", "PositionOnBattery"}


def test_fleet_incident_inhibits_every_position_alert_on_the_way_to_cad() -> None:
    from lifeline_collector.alerting.incidents import INHIBITABLE

    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    fleet = [r for r in config["inhibit_rules"] if 'alertname="FleetIncident"' in r["source_matchers"]]
    assert {tuple(r["source_matchers"]) for r in fleet} == {
        ('alertname="FleetIncident"', 'cause!="silent"'),
        ('alertname="FleetIncident"', 'cause="silent"'),
    }
    assert all(r["equal"] == ["site"] for r in fleet)
    (agency,) = [r for r in fleet if 'cause!="silent"' in r["source_matchers"]]
    names, power = agency["target_matchers"]
    assert power == 'layer!="power"'
    found = re.fullmatch(r'alertname=~"([\w|]+)"', names)
    assert found, names
    inhibited = set(found[1].split("|"))
    positions = {str(r["alert"]) for r in alert_rules() if r["group"] == "lifeline-positions"}
    assert positions - HOME_WARNINGS <= inhibited, sorted(positions - HOME_WARNINGS - inhibited)
    assert not HOME_WARNINGS & inhibited
    # Every alert the collector holds back behind its own incidents is muted here too.
    assert inhibited >= INHIBITABLE, sorted(INHIBITABLE - inhibited)
    (silent,) = [r for r in fleet if 'cause="silent"' in r["source_matchers"]]
    assert silent["target_matchers"] == ['alertname="PositionSilent"']
