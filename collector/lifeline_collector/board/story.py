"""A position's last 24 hours from the collector's own store: graphs per path and a timeline.

Graphs are small inline SVGs (no script, no library): RTT, loss, jitter and MOS of the probe
series per path (primary, backup, tunnel), averaged into fixed time buckets. Paths differ by line
style and a label, not by colour alone. The timeline merges alerts (fired, resolved,
acknowledged), the board's state changes, silences and the agent's own events.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

from lifeline_collector.alerting import health
from lifeline_collector.board.rows import STATE_WORDS
from lifeline_collector.store import unpack_samples

if TYPE_CHECKING:
    from lifeline_collector.people.store import PeopleStore
    from lifeline_collector.service import Collector

DAY = 86400.0
BUCKETS = 144  # 10-minute buckets over a day
MAX_BATCHES = 3000  # a day of batches read at most (evenly thinned beyond): a page, not a query engine
GRAPHED = {
    "lifeline_probe_rtt_seconds": ("Round-trip time", "ms", 1000.0),
    "lifeline_probe_loss_ratio": ("Loss", "%", 100.0),
    "lifeline_probe_jitter_seconds": ("Jitter", "ms", 1000.0),
    "lifeline_probe_mos": ("Voice quality (MOS)", "", 1.0),
}
PATH_STYLES = {"primary": "", "backup": "6 4", "tunnel": "2 3"}
PATH_COLOURS = {"primary": "#0b4f9c", "backup": "#8f4700", "tunnel": "#1b6e35"}


@dataclass(frozen=True, slots=True)
class Graph:
    title: str
    svg: Markup


@dataclass(frozen=True, slots=True)
class Moment:
    at: float
    kind: str  # alert | ack | state | silence | event
    text: str


def _series(service: Collector, agent: str, since_ms: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """metric → path → [(ts_ms, value)] of the graphed metrics since ``since_ms``."""
    store = service.store
    ids = store._query(
        "SELECT id FROM batches WHERE agent = ? AND sample_count > 0 AND max_ts >= ? ORDER BY id",
        (agent, since_ms),
    )
    step = max(1, math.ceil(len(ids) / MAX_BATCHES))
    chosen = [row[0] for row in ids[::step]]
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for start in range(0, len(chosen), 500):
        part = chosen[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = store._query(f"SELECT codec, samples FROM batches WHERE id IN ({marks})", part)  # noqa: S608
        for codec, blob in rows:
            for sample in unpack_samples(int(str(codec)), blob if isinstance(blob, bytes) else None):
                if sample.name not in GRAPHED or sample.ts_ms < since_ms or math.isnan(sample.number):
                    continue
                stat = sample.labels.get("stat")
                if stat is not None and stat != "avg":
                    continue
                path = sample.labels.get("path") or "primary"
                out.setdefault(sample.name, {}).setdefault(path, []).append((sample.ts_ms, sample.number))
    return out


def _svg(
    points: dict[str, list[tuple[int, float]]], since_ms: int, until_ms: int, unit: str, scale: float
) -> Markup:
    width, height, left, bottom = 320, 120, 34, 16
    # The axis starts at the oldest point shown (a position added an hour ago fills the width).
    since_ms = max(since_ms, min(ts for values in points.values() for ts, _ in values))
    span = max(1, until_ms - since_ms)
    bucket_ms = span / BUCKETS
    averaged: dict[str, list[tuple[float, float]]] = {}
    top = 0.0
    for path, values in points.items():
        sums: dict[int, list[float]] = {}
        for ts, value in values:
            sums.setdefault(min(BUCKETS - 1, int((ts - since_ms) / bucket_ms)), []).append(value * scale)
        line = [(float(index), sum(v) / len(v)) for index, v in sorted(sums.items())]
        averaged[path] = line
        top = max([top, *(v for _, v in line)])
    top = top * 1.1 or 1.0
    plot_w, plot_h = width - left - 4, height - bottom - 4

    def xy(index: float, value: float) -> str:
        return f"{left + index / (BUCKETS - 1) * plot_w:.1f},{4 + plot_h - value / top * plot_h:.1f}"

    parts = [
        f'<svg viewBox="0 0 {width} {height + 14 * len(averaged)}" role="img" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{4 + plot_h}" x2="{width - 4}" y2="{4 + plot_h}" stroke="#8a8a8a"/>',
        f'<line x1="{left}" y1="4" x2="{left}" y2="{4 + plot_h}" stroke="#8a8a8a"/>',
        f'<text x="{left - 3}" y="12" font-size="10" text-anchor="end">{top:.3g}</text>',
        f'<text x="{left - 3}" y="{4 + plot_h}" font-size="10" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height}" font-size="10">−{health.seconds_text(span / 1000)}</text>',
        f'<text x="{width - 4}" y="{height}" font-size="10" text-anchor="end">now {escape(unit)}</text>',
    ]
    for number, (path, line) in enumerate(sorted(averaged.items())):
        colour = PATH_COLOURS.get(path, "#333333")
        dash = PATH_STYLES.get(path, "1 2")
        coords = " ".join(xy(index, value) for index, value in line)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dash}"'
            f' points="{coords}"><title>{escape(path)}</title></polyline>'
        )
        y = height + 10 + 14 * number
        parts.append(
            f'<line x1="{left}" y1="{y - 4}" x2="{left + 24}" y2="{y - 4}" stroke="{colour}"'
            f' stroke-width="2" stroke-dasharray="{dash}"/>'
            f'<text x="{left + 30}" y="{y}" font-size="10">{escape(path)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above


def graphs(service: Collector, agent: str, now: float) -> list[Graph]:
    until_ms = round(now * 1000)
    since_ms = until_ms - round(DAY * 1000)
    series = _series(service, agent, since_ms)
    out: list[Graph] = []
    for name, (title, unit, scale) in GRAPHED.items():
        points = series.get(name)
        if points:
            out.append(Graph(f"{title} per path", _svg(points, since_ms, until_ms, unit, scale)))
    return out


def timeline(service: Collector, people: PeopleStore, agent: str, site: str, now: float) -> list[Moment]:
    since_ms = round((now - DAY) * 1000)
    moments: list[Moment] = []
    rows = service.store._query(
        "SELECT at_ms, alertname, state, annotations FROM alert_history WHERE scope IN (?, ?) AND at_ms >= ?"
        " ORDER BY id",
        (agent, f"fleet:{site}", since_ms),
    )
    for at_ms, name, state, notes_json in rows:
        notes = json.loads(str(notes_json))
        if state == "acknowledged":
            comment = notes.get("ack_comment") or ""
            text = f"{name} acknowledged by {notes.get('acknowledged_by', '?')}" + (
                f": “{comment}”" if comment else ""
            )
            moments.append(Moment(int(str(at_ms)) / 1000, "ack", text))
        else:
            moments.append(
                Moment(int(str(at_ms)) / 1000, "alert", f"{name} {state}: {notes.get('summary', '')}")
            )
    for at_ms, state, verdict in people.state_changes(agent, since_ms):
        moments.append(Moment(at_ms / 1000, "state", f"{STATE_WORDS.get(state, state)} — {verdict}"))
    events = service.store._query(
        "SELECT ts_ms, type, attributes FROM events WHERE agent = ? AND ts_ms >= ? ORDER BY ts_ms LIMIT 500",
        (agent, since_ms),
    )
    for ts_ms, kind, attributes in events:
        details = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(str(attributes)).items())[:6])
        moments.append(Moment(int(str(ts_ms)) / 1000, "event", f"{kind} {details}".strip()))
    moments.sort(key=lambda m: m.at, reverse=True)
    return moments


def silences_for(
    service: Collector, labels: dict[str, str], maintenance: Iterable[str], now: float
) -> list[dict[str, object]]:
    """Silences and maintenance windows not over that would mute this position's alerts."""
    windows = set(maintenance)
    out: list[dict[str, object]] = []
    for silence in service.silences():
        if not all(m.matches(labels) for m in silence.matchers):
            continue
        out.append(
            {
                "id": silence.id,
                "kind": "Maintenance" if silence.id in windows else "Silence",
                "state": silence.state(now),
                "matchers": ", ".join(str(m) for m in silence.matchers),
                "starts_at": silence.starts_at,
                "ends_at": silence.ends_at,
                "created_by": silence.created_by,
                "comment": silence.comment,
            }
        )
    return out
