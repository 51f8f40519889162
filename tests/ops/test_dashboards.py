"""The Grafana dashboards and provisioning files parse and are wired to the datasource variable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED = {"lifeline-fleet", "lifeline-position", "lifeline-alerts"}
NO_QUERY_TYPES = {"row", "text"}


def panels_of(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def all_datasource_refs(node: Any, path: str = "$") -> list[tuple[str, Any]]:
    """Every value of a "datasource" key anywhere in the dashboard, with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}.{key}", value))
            found.extend(all_datasource_refs(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(all_datasource_refs(value, f"{path}[{index}]"))
    return found


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    uids = [json.loads(p.read_text(encoding="utf-8"))["uid"] for p in (ROOT / "dashboards").glob("*.json")]
    assert sorted(uids) == sorted(EXPECTED)


def test_dashboard_header(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        assert board["schemaVersion"] >= 36, uid
        assert board["title"].startswith("Lifeline / "), uid
        assert "lifeline" in board["tags"], uid
        assert "id" not in board, f"{uid}: a numeric id makes Grafana reject the file on another instance"


def test_template_variables(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert set(variables) >= {"datasource", "site", "agent"}, uid
        ds = variables["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), uid
        for name in ("site", "agent"):
            var = variables[name]
            assert var["type"] == "query", (uid, name)
            assert var["datasource"] == DS_REF, (uid, name)
            assert re.fullmatch(rf"label_values\(\w+(\{{.*\}})?, {name}\)", var["definition"]), (uid, name)
            assert var["query"]["query"] == var["definition"], (uid, name)
        # Agents are chosen within the chosen sites.
        assert 'site=~"$site"' in variables["agent"]["definition"], uid
    # One position at a time on the Position dashboard.
    position = {v["name"]: v for v in boards["lifeline-position"]["templating"]["list"]}["agent"]
    assert not position["multi"]
    assert not position["includeAll"]


def test_every_query_panel_uses_the_datasource_variable(boards: dict[str, dict[str, Any]]) -> None:
    problems = []
    for uid, board in boards.items():
        for panel in panels_of(board):
            where = f"{uid}: panel {panel['title']!r}"
            if panel["type"] in NO_QUERY_TYPES:
                assert not panel.get("targets"), where
                continue
            if panel.get("datasource") != DS_REF:
                problems.append(f"{where}: datasource {panel.get('datasource')!r}")
            if not panel.get("targets"):
                problems.append(f"{where}: no queries")
            refs = [t["refId"] for t in panel.get("targets", [])]
            if len(refs) != len(set(refs)):
                problems.append(f"{where}: duplicate refIds {refs}")
            for target in panel.get("targets", []):
                if target.get("datasource", DS_REF) != DS_REF:
                    problems.append(f"{where} {target['refId']}: datasource {target['datasource']!r}")
                if not target.get("expr", "").strip():
                    problems.append(f"{where} {target['refId']}: empty expr")
        # Nothing anywhere (annotations, variables, panels) names a fixed data source.
        for path, ref in all_datasource_refs(board):
            if ref != DS_REF and not (path.endswith("templating.list[0].datasource")):
                problems.append(f"{uid}: {path} = {ref!r}")
    assert not problems, "\n".join(problems)


def test_panel_ids_unique_and_layout_fits(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        panels = panels_of(board)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), uid
        cells: dict[tuple[int, int], str] = {}
        for panel in panels:
            pos = panel["gridPos"]
            assert 0 <= pos["x"] < pos["x"] + pos["w"] <= 24, (uid, panel["title"])
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{uid}: {panel['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = panel["title"]


def test_panel_titles_unique_per_dashboard(boards: dict[str, dict[str, Any]]) -> None:
    # The stack test names panels by title, so a title must find one panel.
    for uid, board in boards.items():
        titles = [p["title"] for p in panels_of(board) if p["type"] != "row"]
        assert len(titles) == len(set(titles)), uid


@pytest.mark.parametrize(
    ("uid", "metrics"),
    [
        # Fleet: every position by site with verdict and layer state, failover readiness,
        # positions on backup, active alerts, agents silent.
        (
            "lifeline-fleet",
            {"lifeline_agent_up", "lifeline_verdict_info", "lifeline_layer_state", "lifeline_failover_ready",
             "lifeline_on_backup", "lifeline_alerts_active", "lifeline_agent_last_seen_timestamp_seconds"},
        ),
        # Position: RTT/jitter/loss/MOS, VPN handshake, Wi-Fi and cellular, power, CAD session.
        (
            "lifeline-position",
            {"lifeline_probe_rtt_seconds", "lifeline_probe_jitter_seconds", "lifeline_probe_loss_ratio",
             "lifeline_probe_mos", "lifeline_vpn_handshake_age_seconds", "lifeline_wifi_signal_dbm",
             "lifeline_cellular_rsrp_dbm", "lifeline_power_on_ac", "lifeline_battery_ratio",
             "lifeline_cad_session_rtt_seconds", "lifeline_cad_session_retransmits_total"},
        ),
        # Alerts: history by site, fleet incidents, time to acknowledge, silences, notifications.
        (
            "lifeline-alerts",
            {"lifeline_alerts_active", "lifeline_notifications_total", "ALERTS", "lifeline_silences_active",
             "lifeline_alert_acknowledgements_total", "lifeline_alert_acknowledge_seconds_total"},
        ),
    ],
)  # fmt: skip
def test_dashboard_covers_its_subject(
    boards: dict[str, dict[str, Any]], metric_names: Any, uid: str, metrics: set[str]
) -> None:
    used: set[str] = set()
    for panel in panels_of(boards[uid]):
        for target in panel.get("targets", []):
            used |= metric_names(target["expr"])
    assert metrics <= used, f"{uid} lacks {sorted(metrics - used)}"


def test_position_events_are_annotations(boards: dict[str, dict[str, Any]], metric_names: Any) -> None:
    annotations = boards["lifeline-position"]["annotations"]["list"]
    used = set().union(*(metric_names(a["expr"]) for a in annotations))
    assert {"lifeline_layer_state", "lifeline_interface_carrier_changes_total", "lifeline_on_backup"} <= used
    for ann in annotations:
        assert ann["datasource"] == DS_REF, ann["name"]
        assert ann["enable"], ann["name"]
        assert '$agent"' in ann["expr"], f"annotation {ann['name']!r} is not scoped to the position"


def test_alerts_dashboard_filters_by_site_and_averages_time_to_acknowledge(
    boards: dict[str, dict[str, Any]],
) -> None:
    alerts = boards["lifeline-alerts"]
    exprs = [t["expr"] for p in panels_of(alerts) for t in p.get("targets", [])]
    # Every collector alert series is narrowed to the chosen sites.
    by_site = [e for e in exprs if "lifeline_alert" in e]
    assert by_site
    for expr in by_site:
        for selector in re.findall(r"lifeline_alert\w*\{[^}]*\}", expr):
            assert 'site=~"$site"' in selector, expr
    # Mean time to acknowledge = increase(summed delays) / increase(count), never divided by zero.
    (mean,) = [p for p in panels_of(alerts) if p["title"] == "Mean time to acknowledge"]
    (expr,) = [t["expr"] for t in mean["targets"]]
    assert re.fullmatch(
        r"sum \(increase\(lifeline_alert_acknowledge_seconds_total\{[^}]*\}\[\$__range\]\)\)"
        r" / \(sum \(increase\(lifeline_alert_acknowledgements_total\{[^}]*\}\[\$__range\]\)\) > 0\)",
        expr,
    ), expr
    assert mean["fieldConfig"]["defaults"]["unit"] == "s"
    # No placeholder text panels: every panel shows data.
    assert not [p for p in panels_of(alerts) if p["type"] == "text"]


def test_dashboard_provisioning() -> None:
    provisioning = ROOT / "dashboards" / "provisioning"
    dashboards = yaml.safe_load((provisioning / "dashboards.yaml").read_text(encoding="utf-8"))
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["folder"] == "Lifeline"


def test_datasource_provisioning_matches_prometheus_scrape_interval() -> None:
    provisioning = ROOT / "dashboards" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources.yaml").read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith(("http://", "https://"))
    prometheus = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    # $__rate_interval is computed from the data source's scrape interval: they must agree.
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]
