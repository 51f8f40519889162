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
    # The unit tests pin the thresholds: CAD paging at 4 failed rounds moved to 5 must fail them.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    alerts = copy / "rules" / "alerts.yml"
    text = alerts.read_text(encoding="utf-8")
    assert text.count('{role="cad"}) >= 4\n') == 1
    alerts.write_text(text.replace('{role="cad"}) >= 4\n', '{role="cad"}) >= 5\n'), encoding="utf-8")
    done = promtool("test", "rules", "tests/alerts_test.yml", cwd=copy)
    assert done.returncode != 0
    assert "CadTargetUnreachable" in done.stdout + done.stderr


# The collector's behaviours the rules mirror, each undone in a copy of the rules: the unit tests
# must notice. (what, text in alerts.yml, its replacement, the alert whose test must fail)
REVERSIONS = [
    # PositionLayerFailed for layer="dns" with the CAD layer ok is a warning, not a page.
    ("dns warning", 'lifeline_layer_state{layer="cad"} == 0', 'lifeline_layer_state{layer="cad"} == 9', "PositionLayerFailed"),
    # resolve_hold: a firing alert resolves only after its condition stayed clear for 10 s.
    ("resolve_hold", "        keep_firing_for: 10s\n", "", "CadTargetUnreachable"),
    ("resolve_hold", "        keep_firing_for: 10s\n", "", "PositionLayerFailed"),
    ("fleet window", "        keep_firing_for: 70s\n", "", "FleetIncident"),
    # min_lead: no new prediction page with under 3 s left …
    ("min_lead", "lifeline_cad_time_to_loss_seconds >= 3\n", "lifeline_cad_time_to_loss_seconds >= 0\n", "CadAtRisk"),
    # … unless already warned …
    ("already warned", 'ALERTS{alertname="CadAtRisk", severity="warning"}', 'ALERTS{alertname="Nothing"}', "CadAtRisk"),
    # … and "is losing CAD now" under 1 s left.
    ("losing now", "{{- if lt $ttl 1.0 }}", "{{- if lt $ttl 0.0 }}", "CadAtRisk"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "old", "new", "alertname"), REVERSIONS, ids=lambda v: str(v))
def test_promtool_test_rules_catches_a_reverted_behaviour(
    tmp_path: Path, what: str, old: str, new: str, alertname: str
) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    alerts = copy / "rules" / "alerts.yml"
    text = alerts.read_text(encoding="utf-8")
    assert old in text, what
    alerts.write_text(text.replace(old, new), encoding="utf-8")
    tests = sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("*.yml"))
    done = promtool("test", "rules", *tests, cwd=copy)
    assert done.returncode != 0, what
    assert f"alertname: {alertname}," in done.stdout + done.stderr, done.stdout + done.stderr


def test_holds_and_lead_are_the_collectors_defaults() -> None:
    from lifeline_collector.alerting.rules.cad_at_risk import CadAtRisk
    from lifeline_collector.config import DEFAULT_HOLDS, AlertingSection

    defaults = AlertingSection()
    rules = {str(rule["alert"]): rule for rule in alert_rules()}
    for rule in alert_rules():
        # Prometheus' keep_firing_for is the collector's resolve_hold; a fleet incident also holds
        # for the fleet window once fewer positions remain.
        extra = defaults.fleet_window if rule["alert"] == "FleetIncident" else 0.0
        assert rule.get("keep_firing_for") == f"{defaults.resolve_hold + extra:.0f}s", rule["alert"]
    assert rules["FailoverNotReady"]["for"] == f"{DEFAULT_HOLDS['FailoverNotReady']:.0f}s"
    for name in ("CadAtRisk", "PositionLayerFailed", "FleetIncident"):
        assert DEFAULT_HOLDS[name] == 0.0
        assert all("for" not in r for r in alert_rules() if r["alert"] == name), name
    cad_at_risk = [str(r["expr"]) for r in alert_rules() if r["alert"] == "CadAtRisk"]
    assert len(cad_at_risk) == 2
    for expr in cad_at_risk:
        assert f"lifeline_cad_time_to_loss_seconds >= {CadAtRisk.min_lead:g}\n" in expr
        assert f"lifeline_cad_risk_ratio >= {defaults.risk_warn:g}" in expr
    assert f"lifeline_cad_risk_ratio >= {defaults.risk_page:g}" in cad_at_risk[1]
    assert f"lifeline_cad_time_to_loss_seconds <= {defaults.page_time_to_loss:g}" in cad_at_risk[1]
    cad = rules["CadTargetUnreachable"]
    assert f'{{role="cad"}}) >= {defaults.cad_failures}' in str(cad["expr"])


def test_every_alert_is_unit_tested() -> None:
    tested: set[str] = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names == tested, f"alerts without a firing unit test: {sorted(names - tested)}"


def test_every_recording_rule_is_unit_tested() -> None:
    recorded: set[str] = set()
    for group in yaml.safe_load((PROM / "rules" / "recording.yml").read_text(encoding="utf-8"))["groups"]:
        recorded.update(rule["record"] for rule in group["rules"])
    tested: set[str] = set()
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
HOME_WARNINGS = {"FailoverNotReady"}


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
