"""A lab's state file and lock: what another shell needs to act on a lab it did not bring up.

``lifeline-lab up`` writes ``<state_dir>/<prefix>.json`` (namespaces, processes by PID and start
time, impairments, timings; never a key) and every change rewrites it atomically, so ``status``,
``impair``, ``run`` and ``down`` from any shell see the same lab. One CLI command at a time holds
``<prefix>.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lifeline_lab.errors import LabStateError

if TYPE_CHECKING:
    from lifeline_lab.topology import Lab

DEFAULT_STATE_DIR = "/run/lifeline-lab"
STATE_VERSION = 1


def to_json(lab: Lab) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "prefix": lab.prefix,
        "vpn": lab.vpn,
        "state_dir": lab.state_dir,
        "cadsim": lab.cadsim,
        "keepalive": lab.keepalive,
        "namespaces": lab.namespaces,
        "wg": {
            "client_if": lab.wg_client_if,
            "hub_if": lab.wg_hub_if,
            "host": lab.wg_host,
            "public_keys": lab.wg_public_keys,
        },
        "procs": {name: rec.to_json() for name, rec in lab.procs.items()},
        "impairments": lab.impairments,
        "timings": lab.timings,
        "created": lab.created,
    }


def write(lab: Lab) -> None:
    """Replace the state file in one rename, so a reader never sees half of it."""
    os.makedirs(lab.state_dir, exist_ok=True)
    tmp = f"{lab.state_path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(to_json(lab), handle, indent=1)
    os.replace(tmp, lab.state_path)


def read(path: str, prefix: str) -> dict[str, Any]:
    """The state file of the lab with ``prefix``, checked to be one this version wrote."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise LabStateError(
            f"no lab with prefix {prefix!r} is up (no {path}); start one with `lifeline-lab up`"
        ) from None
    except json.JSONDecodeError as exc:
        raise LabStateError(f"{path}: not a lab state file ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise LabStateError(f"{path}: state version {version!r}, expected {STATE_VERSION}")
    return data


@contextlib.contextmanager
def locked(lab: Lab) -> Iterator[None]:
    """Hold the lab's lock while changing it (one CLI command at a time)."""
    os.makedirs(lab.state_dir, exist_ok=True)
    with open(lab.lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_labs(state_dir: str = DEFAULT_STATE_DIR) -> list[str]:
    """Prefixes of labs with a state file."""
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.endswith(".json"):
            try:
                with open(os.path.join(state_dir, name), encoding="utf-8") as handle:
                    out.append(str(json.load(handle)["prefix"]))
            except (OSError, ValueError, KeyError):
                continue
    return out
