"""Every metric a dashboard or a rule queries exists: in the catalog, as a recording rule, or built in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifeline_wire.catalog import AGENT_LABELS, CATALOG

ROOT = Path(__file__).resolve().parents[2]
# Series Prometheus itself writes.
BUILTINS = {"up": {"job", "instance"}, "ALERTS": None, "ALERTS_FOR_STATE": None}
# Labels every scraped series may carry besides its declared ones.
SCRAPE_LABELS = {"job", "instance", *AGENT_LABELS}
# Catalog metrics no dashboard charts, and why. A metric added to the catalog must be charted or
# listed here.
NOT_CHARTED = {
    "lifeline_probe_duration_seconds": "wall time of a probe round: a debugging aid, shown by probe-once",
    "lifeline_probe_packets_sent_total": "charted through the loss recording rule",
    "lifeline_probe_packets_received_total": "charted through the loss recording rule",
    "lifeline_agent_spool_unreadable_batches": "0 unless an upgrade tightened the contract; the agent logs it",
}


# The queries alert annotations run (``printf `<PromQL with %q>` $labels.agent ... | query``).
_TEMPLATE_QUERY = re.compile(r"printf `([^`]*)`")


def rule_expressions() -> list[tuple[str, str]]:
    """Every rule's expression, and every query its annotations run (with "x" for each %q)."""
    out = []
    for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                where = f"{path.name}: {rule.get('record') or rule.get('alert')}"
                out.append((where, rule["expr"]))
                for key, text in sorted(rule.get("annotations", {}).items()):
                    for found in _TEMPLATE_QUERY.finditer(text):
                        out.append((f"{where} {key}", found[1].replace("%q", '"x"')))
    return out


def test_annotation_queries_are_checked() -> None:
    # The annotations' queries are read like expressions: the time to loss in CadAtRisk's words.
    queries = [expr for where, expr in rule_expressions() if where.endswith("CadAtRisk summary")]
    assert 'clamp_min(lifeline_cad_time_to_loss_seconds{agent="x",site="x"}, 0)' in queries


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (site) (rate(lifeline_probe_packets_sent_total{role="cad"}[$__rate_interval]))',
         {"lifeline_probe_packets_sent_total"}),
        ('max by (agent, site) (time() - a_b{x="y z"}) and on (agent, site) (c:d:e == 0)', {"a_b", "c:d:e"}),
        ('label_replace(1 - up, "cause", "silent", "", "") or vector(0)', {"up"}),
        ("x > bool 3 unless ignoring (job) y offset 5m", {"x", "y"}),
        ("clamp(1 - a / (b > 0), 0, 1.5e3) * -Inf", {"a", "b"}),
        ('ALERTS{alertstate="firing", agent=~"$agent"}', {"ALERTS"}),
        ('sum without (instance) (m) / on (site) group_left (position) n', {"m", "n"}),
    ],
)  # fmt: skip
def test_metric_name_extraction(metric_names: Any, expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selector_label_extraction(matchers_of: Any) -> None:
    assert matchers_of('a{x="1", y=~"a,b=c"} + b{} + max by (z) (c{w!="q"})') == [
        ("a", {"x", "y"}),
        ("b", set()),
        ("c", {"w"}),
    ]


def known_names(recorded: set[str]) -> set[str]:
    return set(CATALOG) | recorded | set(BUILTINS)


def test_dashboard_metrics_exist(queries: list[Any], metric_names: Any, recorded: set[str]) -> None:
    known = known_names(recorded)
    problems = [
        f"{q.dashboard}: {q.panel} {q.ref}: unknown metric {name!r} in {q.expr!r}"
        for q in queries
        for name in sorted(metric_names(q.expr) - known)
    ]
    assert not problems, "\n".join(problems)


def test_rule_metrics_exist(metric_names: Any, recorded: set[str]) -> None:
    known = known_names(recorded)
    problems = [
        f"{where}: unknown metric {name!r}"
        for where, expr in rule_expressions()
        for name in sorted(metric_names(expr) - known)
    ]
    assert not problems, "\n".join(problems)


def test_selectors_use_declared_labels(queries: list[Any], matchers_of: Any) -> None:
    expressions = [(f"{q.dashboard}: {q.panel} {q.ref}", q.expr) for q in queries] + rule_expressions()
    problems = []
    for where, expr in expressions:
        for metric, labels in matchers_of(expr):
            if metric in CATALOG:
                allowed = set(CATALOG[metric].labels) | SCRAPE_LABELS
            elif BUILTINS.get(metric) is not None:
                allowed = BUILTINS[metric] or set()
            else:
                continue
            if labels - allowed:
                problems.append(f"{where}: {metric} has no label {sorted(labels - allowed)}")
    assert not problems, "\n".join(problems)


def test_every_catalog_metric_is_charted_or_excused(
    queries: list[Any], metric_names: Any, recorded: set[str]
) -> None:
    used = set().union(*(metric_names(q.expr) for q in queries if q.kind == "panel"))
    missing = sorted(set(CATALOG) - used - set(NOT_CHARTED))
    assert not missing, f"catalog metrics no dashboard panel charts (chart them or list them): {missing}"
    stale = sorted(name for name in NOT_CHARTED if name in used or name not in CATALOG)
    assert not stale, f"NOT_CHARTED lists metrics that are charted or gone: {stale}"


def test_recorded_names_follow_the_convention(recorded: set[str]) -> None:
    # level:metric:operations, with the metric a catalog name.
    for name in recorded:
        level, metric, operations = name.split(":")
        assert level, name
        assert operations, name
        assert metric in CATALOG or metric.startswith("lifeline_"), name


def test_every_recording_rule_is_used(queries: list[Any], metric_names: Any, recorded: set[str]) -> None:
    used = set().union(*(metric_names(q.expr) for q in queries))
    used |= set().union(*(metric_names(expr) for _, expr in rule_expressions()))
    assert recorded <= used, f"recording rules nothing reads: {sorted(recorded - used)}"
