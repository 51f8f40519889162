"""status.json: what the running agent sees, rewritten whole every second for ``lifeline-agent status``.

The document is built from what the agent's parts report (assessment, warning, providers, routes,
targets, spool, delivery, heartbeat); the assessment travels as JSON and is read back by the CLI.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lifeline_agent import __version__
from lifeline_agent.clock import pause
from lifeline_agent.config import AgentConfig, Target
from lifeline_agent.delivery.shipper import Shipper
from lifeline_agent.delivery.spool import Spool
from lifeline_agent.health.assessment import Assessment, LayerStatus, PathScore

STATUS_FILE = "status.json"
STATUS_INTERVAL = 1.0


def status_document(
    config: AgentConfig,
    boot_id: str,
    *,
    running: bool,
    updated_ms: int,
    assessment: Assessment | None,
    warning: dict[str, Any],
    providers: Mapping[str, tuple[bool, str]],
    routes: Any,
    targets: Sequence[Mapping[str, object]],
    spool: Spool | None,
    shipper: Shipper | None,
    heartbeat: dict[str, object] | None,
) -> dict[str, Any]:
    """The status.json document; ``routes`` is the routes source's latest facts (None before any)."""
    return {
        "agent": config.agent.id,
        "site": config.agent.site,
        "position": config.agent.position,
        "version": __version__,
        "boot_id": boot_id,
        "pid": os.getpid(),
        "running": running,
        "updated_ms": updated_ms,
        "assessment": assessment_to_dict(assessment) if assessment is not None else None,
        "warning": warning,
        "providers": {
            name: {"available": ok, "reason": reason} for name, (ok, reason) in sorted(providers.items())
        },
        "routes": routes_status(routes),
        "targets": list(targets),
        "spool": {
            "path": config.spool_path,
            "batches": spool.depth() if spool is not None else 0,
            "dropped": spool.dropped if spool is not None else 0,
        },
        "delivery": {
            # The route that delivered last (endpoint and path: default or bound to the backup).
            "endpoint": shipper.paths.current.base if shipper and shipper.paths.current else "",
            "via": shipper.paths.current.via if shipper and shipper.paths.current else "",
            "sent": shipper.stats.sent if shipper else 0,
            "rejected": shipper.stats.rejected if shipper else 0,
            "last_ok_ms": shipper.stats.last_ok_ms if shipper else 0,
            "last_error": shipper.stats.last_error if shipper else "",
        },
        "heartbeat": heartbeat,
    }


def routes_status(state: Any) -> dict[str, Any] | None:
    """How CAD is reached, for status.json: the interface and source address per CAD address."""
    if state is None:
        return None
    return {
        "primary_interface": state.primary_interface,
        "backup_interface": state.backup_interface,
        "on_backup": state.on_backup,
        "cad": [
            {
                "target": c.target,
                "address": c.address,
                "interface": c.route.interface if c.route else "",
                "source": c.route.prefsrc if c.route else "",
                "via_tunnel": c.via_tunnel,
                "misrouted": c.misrouted,
            }
            for c in state.cad
        ],
        "split_dns": [{"target": r.target, "ok": r.ok, "reason": r.reason} for r in state.split_dns],
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def assessment_to_dict(a: Assessment) -> dict[str, Any]:
    """JSON-safe (no Infinity: an unbounded time to loss is null)."""
    return {
        "at": a.at,
        "position": a.position,
        "layers": [
            {"layer": s.layer, "state": s.state, "reason": s.reason, "since": s.since} for s in a.layers
        ],
        "verdict": a.verdict,
        "verdict_layer": a.verdict_layer,
        "verdict_state": a.verdict_state,
        "backup_ready": a.backup_ready,
        "backup_rtt": _finite(a.backup_rtt),
        "backup_loss": _finite(a.backup_loss),
        "backup_reason": a.backup_reason,
        "on_backup": a.on_backup,
        "risk": _finite(a.risk) or 0.0,
        "risk_band": a.risk_band,
        "time_to_loss": _finite(a.time_to_loss),
        "risk_reason": a.risk_reason,
        "vpn_inferred": a.vpn_inferred,
        "mos": [
            {
                "target": p.target.name,
                "role": p.target.role,
                "path": p.target.path,
                "kind": p.target.kind,
                "mos": p.mos,
            }
            for p in a.mos
            if math.isfinite(p.mos)
        ],
        "warning": a.warning,
    }


def assessment_from_dict(d: Mapping[str, Any]) -> Assessment:
    """The inverse of :func:`assessment_to_dict`; raises KeyError/TypeError/ValueError on bad input."""
    ttl = d.get("time_to_loss")
    return Assessment(
        at=float(d["at"]),
        position=str(d.get("position", "")),
        layers=tuple(
            LayerStatus(str(s["layer"]), str(s["state"]), str(s["reason"]), float(s["since"]))
            for s in d["layers"]
        ),
        verdict=str(d["verdict"]),
        verdict_layer=str(d["verdict_layer"]),
        verdict_state=str(d["verdict_state"]),
        backup_ready=d.get("backup_ready"),
        backup_rtt=d.get("backup_rtt"),
        backup_loss=d.get("backup_loss"),
        backup_reason=str(d.get("backup_reason", "")),
        on_backup=bool(d.get("on_backup")),
        risk=float(d.get("risk", 0.0)),
        risk_band=str(d.get("risk_band", "low")),
        time_to_loss=math.inf if ttl is None else float(ttl),
        risk_reason=str(d.get("risk_reason", "")),
        vpn_inferred=bool(d.get("vpn_inferred")),
        mos=tuple(
            PathScore(
                Target(name=m["target"], role=m["role"], kind=m["kind"], host="", path=m["path"]),
                float(m["mos"]),
            )
            for m in d.get("mos", [])
        ),
        warning=d.get("warning"),
    )


def write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    """Write to a temporary file and rename it over ``path``: a reader sees the old or the new file.

    Compact, in one write: ``indent`` would turn off json's C encoder (5× slower, every second).
    ``lifeline-agent status --json`` prints it indented.
    """
    text = json.dumps(data, separators=(",", ":"))
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_status(state_dir: str, document: Mapping[str, Any]) -> None:
    write_json_atomic(os.path.join(state_dir, STATUS_FILE), document)


async def write_status_every_second(
    state_dir: str, document: Callable[[], Mapping[str, Any]], stop: asyncio.Event
) -> None:
    """Rewrite status.json every STATUS_INTERVAL until ``stop`` (off the loop: a disk may stall)."""
    while not stop.is_set():
        await asyncio.to_thread(write_status, state_dir, document())
        await pause(stop, STATUS_INTERVAL)


def read_status(state_dir: str) -> dict[str, Any]:
    """The status the running agent last wrote (raises OSError / ValueError)."""
    with open(os.path.join(state_dir, STATUS_FILE), encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError("status.json is not an object")
    return data
