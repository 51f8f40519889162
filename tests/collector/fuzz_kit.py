"""Fuzz cases for the collector (imported by tests/collector/test_fuzz.py and bench/fuzz.py).

Two sources: schemathesis over the collector's own OpenAPI document (every operation, bodies that
follow the schema and bodies that break it), and hypothesis mutating real agent batches — the
shapes the tests' helpers build (a CAD probe round, the catalog series of a home position in the
series form, verdicts, time to loss, events) — one change at a time: a value swapped for a nasty
one (NaN, 2**63, a control character, a bidi override, megabytes of text, deep nesting), a key
dropped or added, a list repeated, another agent's id, or the bytes truncated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import schemathesis
from collector_kit import cad_round
from hypothesis import strategies as st

from lifeline_collector import openapi
from lifeline_wire import Batch, Envelope, Event, Sample, SeriesPoints, encode

MS = 1_700_000_000_000
AGENT = "pos-1"
CAD = {"target": "cad-primary", "role": "cad", "kind": "tcp"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None
    query: dict[str, Any] | None = None


def real_envelopes(seq: int) -> list[bytes]:
    """What agents send: a CAD round in the sample form (version 1), and a home position's
    series in the series form (version 2) with verdicts, time to loss and events."""
    samples = [
        *cad_round(MS, False, 3),
        Sample("lifeline_verdict_info", 1.0, MS, {"layer": "vpn", "verdict": "VPN tunnel down"}),
        Sample("lifeline_cad_time_to_loss_seconds", math.inf, MS, {}),
        Sample("lifeline_cad_risk_ratio", 0.4, MS, {}),
    ]
    events = [
        Event("probe.state_change", MS, {"target": "cad-primary", "from": "up", "to": "down", "rtt": 0.25})
    ]
    version1 = Envelope(
        version=1,
        batches=[Batch(AGENT, "boot-1", seq, MS, samples=samples, events=events)],
        sent_ms=MS,
        site="north",
        position="1",
    )
    series = [
        SeriesPoints(name, {**labels, "target": target}, [(MS + 1000 * i, value) for i in range(5)])
        for target in ("cad-primary", "router", "isp", "vpn-headend")
        for name, labels, value in (
            ("lifeline_probe_success", {"role": "cad", "kind": "icmp"}, 1.0),
            ("lifeline_probe_rtt_seconds", {"role": "cad", "kind": "icmp", "stat": "avg"}, 0.021),
            ("lifeline_probe_loss_ratio", {"role": "cad", "kind": "icmp"}, 0.0),
            ("lifeline_probe_consecutive_failures", {"role": "cad", "kind": "icmp"}, 0.0),
        )
    ]
    series.append(SeriesPoints("lifeline_cad_time_to_loss_seconds", {}, [(MS, math.inf), (MS + 1000, 42.0)]))
    version2 = Envelope(
        version=2,
        batches=[Batch(AGENT, "boot-1", seq + 1, MS, series=series, events=events)],
        sent_ms=MS,
    )
    return [encode(version1), encode(version2)]


# --- hypothesis: one mutation of a real batch ------------------------------------------------------

NASTY_TEXT = [
    "",
    "\x00",
    "cad\u202eyramirp",
    "line\nbreak",
    "\x1b[2J",
    "NaN",
    "+Inf",
    "x" * 300,
    "y" * 70_000,
    "\ud7ff\ue000\U0010ffff",
    "$.batches[0]",
]
NASTY_NUMBERS = [
    0,
    -1,
    2**31,
    2**53,
    2**53 - 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**400,
    1e308,
    -1e308,
    5e-324,
]

nasty_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NASTY_NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=40),
    st.sampled_from(["NaN", "+Inf", "-Inf", "Infinity", "nan", "1e999"]),
)
nasty = st.recursive(
    nasty_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*at, index))


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for step in path[:-1]:
        node = node[step]
    return node


def _mutate(data: st.DataObject, body: bytes) -> bytes:
    tree = json.loads(body)
    paths = list(_paths(tree))[1:]
    path = data.draw(st.sampled_from(paths), label="path")
    parent, key = _parent(tree, path), path[-1]
    how = data.draw(
        st.sampled_from(
            ["replace", "replace", "replace", "drop", "add", "repeat", "deepen", "other_agent", "bytes"]
        ),
        label="how",
    )
    if how == "replace":
        parent[key] = data.draw(nasty, label="value")
    elif how == "drop":
        del parent[key]
    elif how == "add":
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            target[
                data.draw(st.sampled_from(["extra", "labels", "value", "__name__", "seq"]), label="key")
            ] = data.draw(nasty)
    elif how == "repeat":
        if isinstance(parent, list):
            parent.extend([parent[key]] * data.draw(st.integers(1, 600), label="times"))
    elif how == "deepen":
        depth = data.draw(st.sampled_from([2, 50, 5000]), label="depth")
        value: Any = parent[key]
        for _ in range(depth):
            value = [value]
        parent[key] = value
    elif how == "other_agent":
        for batch in tree.get("batches", []) if isinstance(tree, dict) else []:
            if isinstance(batch, dict):
                batch["agent_id"] = data.draw(st.sampled_from(["pos-2", "", "a" * 65, "pos-1\x00"]))
    try:
        sent = json.dumps(tree, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        sent = body
    if how == "bytes":
        cut = data.draw(st.integers(0, len(sent)), label="cut")
        sent = sent[:cut] + data.draw(st.binary(max_size=8), label="junk")
    return sent


@st.composite
def mutated_ingest(draw: st.DrawFn, token: str) -> Request:
    """One real agent request with one mutation, with the agent's token (sometimes none)."""
    data = draw(st.data())
    bodies = real_envelopes(draw(st.integers(0, 1000)))
    body = _mutate(data, draw(st.sampled_from(bodies)))
    auth = draw(st.sampled_from([f"Bearer {token}"] * 8 + ["", "Bearer wrong", "Basic x"]))
    return Request(
        "POST", "/api/v1/ingest", {"Authorization": auth, "Content-Type": "application/json"}, body
    )


# --- schemathesis: the collector's OpenAPI document -------------------------------------------------


def _sendable(value: str) -> bool:
    return value == value.strip() and all(" " <= c <= "~" for c in value)


def openapi_cases(token: str, admin_token: str) -> st.SearchStrategy[Request]:
    """Requests schemathesis builds from the OpenAPI document, valid and invalid, with credentials."""
    schema = schemathesis.openapi.from_dict(openapi.document("fuzz"))

    def as_request(case: Any, auth: str) -> Request:
        body = None
        if not isinstance(case.body, schemathesis.core.NotSet):
            body = msgspec.json.encode(case.body) if not isinstance(case.body, bytes) else case.body
        # Values an HTTP client refuses to send (control characters, edge whitespace) stay out.
        headers = {str(k): str(v) for k, v in (case.headers or {}).items() if _sendable(str(v))}
        if auth:
            headers["Authorization"] = auth
        return Request(case.method.upper(), case.formatted_path, headers, body, dict(case.query or {}))

    credentials = st.sampled_from([f"Bearer {token}", f"Bearer {admin_token}", ""])
    return st.builds(as_request, schema.as_strategy(), credentials)
