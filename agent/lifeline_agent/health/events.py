"""What leaves the laptop from each assessment: events for what changed, samples of the state.

Events carry a change the moment it happens (the collector alerts on them ahead of the periodic
batch); samples are the catalog series of the assessment, sent with every batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lifeline_agent.health.assessment import Assessment
from lifeline_wire.catalog.health import STATES
from lifeline_wire.schema import Event, EventAttr, Sample

# A layer whose state changed in an evaluation: (layer, state before, state after).
LayerChange = tuple[str, str, str]


def change_events(
    a: Assessment, previous: Assessment | None, changes: Sequence[LayerChange], previous_band: str | None
) -> list[Event]:
    """The events of one evaluation, oldest kind first: each layer that changed state, the verdict
    when its layer, state or label changed (not its numbers), and the risk band when it moved
    (``previous_band`` is None when it did not)."""
    events: list[Event] = []
    ts = int(a.at * 1000)
    base: dict[str, EventAttr] = {"position": a.position} if a.position else {}
    for layer, before, after in changes:
        attrs: dict[str, EventAttr] = {
            **base,
            "layer": layer,
            "state": after,
            "previous": before,
            "reason": a.layer(layer).reason,
        }
        events.append(Event("health.layer", ts, attrs))
    before_key = (
        (previous.verdict_layer, previous.verdict_state, previous.verdict_label) if previous else None
    )
    if before_key != (a.verdict_layer, a.verdict_state, a.verdict_label):
        attrs = {
            **base,
            "layer": a.verdict_layer,
            "state": a.verdict_state,
            "cause": a.verdict_cause,
            "verdict": a.verdict,
            "previous": previous.verdict if previous else "",
            "backup_ready": "unknown" if a.backup_ready is None else str(a.backup_ready).lower(),
            "on_backup": a.on_backup,
            "risk": a.risk,
        }
        if math.isfinite(a.time_to_loss):
            attrs["time_to_loss"] = round(a.time_to_loss, 1)
        events.append(Event("health.verdict", ts, attrs))
    if previous_band is not None:
        attrs = {
            **base,
            "band": a.risk_band,
            "previous": previous_band,
            "risk": a.risk,
            "reason": a.risk_reason,
        }
        if math.isfinite(a.time_to_loss):
            attrs["time_to_loss"] = round(a.time_to_loss, 1)
        events.append(Event("health.risk", ts, attrs))
    return events


def state_samples(a: Assessment, include_mos: bool = True) -> list[Sample]:
    """The catalog series of an assessment: every layer's state, the verdict, risk and time to loss,
    and (``include_mos``) each path's voice quality score."""
    ts = int(a.at * 1000)
    out = [Sample("lifeline_layer_state", float(STATES[s.state]), ts, {"layer": s.layer}) for s in a.layers]
    verdict = {"layer": a.verdict_layer, "cause": a.verdict_cause, "verdict": a.verdict_label}
    out.append(Sample("lifeline_verdict_info", 1.0, ts, verdict))
    out.append(Sample("lifeline_cad_risk_ratio", a.risk, ts))
    out.append(Sample("lifeline_cad_time_to_loss_seconds", a.time_to_loss, ts))
    if include_mos:
        for score in a.mos:
            t = score.target
            labels = {"target": t.name, "role": t.role, "path": t.path, "kind": t.kind}
            out.append(Sample("lifeline_probe_mos", score.mos, ts, labels))
    return out
