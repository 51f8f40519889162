"""Shared fixtures for the ops tests: the shipped dashboards, their queries, PromQL metric names."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
PROMETHEUS = ROOT / "deploy" / "prometheus"


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard: a panel target, a variable or an annotation."""

    dashboard: str  # uid
    panel: str  # panel title, "variable <name>" or "annotation <name>"
    ref: str
    expr: str
    legend: str = ""
    kind: str = "panel"  # panel | variable | annotation


def load_dashboards() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        out[board["uid"]] = board
    return out


def iter_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        # Collapsed rows carry their panels inside.
        yield from panel.get("panels", [])


def dashboard_queries(boards: dict[str, dict[str, Any]]) -> list[Query]:
    out: list[Query] = []
    for uid, board in boards.items():
        for panel in iter_panels(board):
            for target in panel.get("targets", []):
                out.append(
                    Query(
                        uid, panel["title"], target["refId"], target["expr"], target.get("legendFormat", "")
                    )
                )
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                found = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
                assert found, f"{uid}: variable {var['name']}: not a label_values() query"
                out.append(Query(uid, f"variable {var['name']}", found[2], found[1], kind="variable"))
        for ann in board["annotations"]["list"]:
            if "expr" in ann:
                out.append(Query(uid, f"annotation {ann['name']}", "", ann["expr"], kind="annotation"))
    return out


# PromQL words that look like identifiers but name no series.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2",
}  # fmt: skip
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def promql_metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (enough PromQL for our files; tested in test_metric_names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, label_replace args)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])(?:\d+(?:ms|[smhdwy]))+(?![\w:])", " ", text)  # durations (offset 5m)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][-+]?\d+)?", " ", text)  # numbers
    names = set()
    for found in re.finditer(rf"({_IDENT})\s*(\(?)", text):
        word, call = found[1], found[2]
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched in its braces) for every `metric{...}` selector."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return [
        (found[1], set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", found[2])))
        for found in re.finditer(rf"({_IDENT})\s*\{{([^}}]*)\}}", text)
    ]


def recording_rule_names() -> set[str]:
    import yaml

    names: set[str] = set()
    for path in (PROMETHEUS / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


@pytest.fixture(scope="session")
def boards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


@pytest.fixture(scope="session")
def queries(boards: dict[str, dict[str, Any]]) -> list[Query]:
    return dashboard_queries(boards)


@pytest.fixture(scope="session")
def metric_names() -> Callable[[str], set[str]]:
    return promql_metric_names


@pytest.fixture(scope="session")
def matchers_of() -> Callable[[str], list[tuple[str, set[str]]]]:
    return selector_labels


@pytest.fixture(scope="session")
def recorded() -> set[str]:
    return recording_rule_names()


@pytest.fixture
def free_port() -> Callable[[], int]:
    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    return pick
