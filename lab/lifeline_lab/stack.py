"""Lifeline in the lab: the real collector in ``vpnhub`` and the real agent in ``laptop``.

Where things run (one choice for tests, benchmarks and demos)::

    laptop   lifeline-agent (the position)        the conventional stack (``conventional``)
    vpnhub   lifeline-collector on 0.0.0.0:8480   ← the agency edge: 10.20.0.1 through the tunnel,
                                                    203.0.113.10 from the internet (public fallback)
    both     the test's WebhookReceiver (``webhook``), on each namespace's own loopback

The collector runs on the VPN concentrator's box, so the agent reaches it through the tunnel
(``http://10.20.0.1:8480``) and, when the tunnel is down, over the internet on the concentrator's
public address (``http://203.0.113.10:8480``, an endpoint marked ``public`` with
``allow_public = true``) by the primary or, bound to usb0, the hotspot — the fallback design
decision 4 describes. Breaking the agency LAN (vpnhub ⇄ cad) leaves the collector reachable.

Every process is started through the ``Lab`` (it ends them by PID on teardown) and stopped by
``close()``; every file lives in a private temporary directory that ``close()`` removes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from lifeline_lab.errors import LabError
from lifeline_lab.layout import ADDR, CAD_NAME, CAD_PORT
from lifeline_lab.netns import http_get
from lifeline_lab.procs import wait_until
from lifeline_lab.topology import Lab
from lifeline_lab.webhook import WebhookReceiver

BIN = Path(sys.executable).parent
COLLECTOR_PORT = 8480
AGENT_ID = "pos-12"
SITE = "north"
POSITION = "12"


# -- the agent's configuration ------------------------------------------------------------------


def agent_targets(
    *, interval: float = 0.3, timeout: float | None = None, vpn_probe: bool = True
) -> list[dict[str, Any]]:
    """One or more targets per layer, the way a position's agent would be configured.

    ``vpn`` probes the concentrator's tunnel address (10.99.0.1); ``agency-lan`` a host on the
    agency LAN beyond the concentrator (the DNS server's address); ``cad-tcp`` the CAD port and
    ``cad-icmp`` the CAD host. Without ``vpn_probe`` the agent must infer the tunnel (home VPN
    router). The backup target is bound to usb0 by the agent (path "backup").
    """
    wait = timeout if timeout is not None else min(1.0, interval * 0.8)
    common = {"interval": interval, "timeout": wait}
    targets: list[dict[str, Any]] = [
        {"name": "router", "role": "router", "kind": "icmp", "host": ADDR.router, "path": "primary"},
        {"name": "internet", "role": "internet", "kind": "icmp", "host": ADDR.internet, "path": "primary"},
        {"name": "vpn-backup", "role": "vpn", "kind": "icmp", "host": ADDR.vpnhub_public, "path": "backup"},
        {"name": "agency-lan", "role": "router", "kind": "icmp", "host": ADDR.dns, "path": "tunnel"},
        {
            "name": "agency-dns",
            "role": "dns",
            "kind": "dns",
            "host": ADDR.dns,
            "query": CAD_NAME,
            "expect": ADDR.cad_server,
            "path": "tunnel",
        },
        {"name": "cad-tcp", "role": "cad", "kind": "tcp", "host": ADDR.cad_server, "port": CAD_PORT,
         "path": "tunnel"},
        {"name": "cad-icmp", "role": "cad", "kind": "icmp", "host": ADDR.cad_server, "path": "tunnel"},
    ]  # fmt: skip
    if vpn_probe:
        targets.insert(2, {"name": "vpn", "role": "vpn", "kind": "icmp", "host": ADDR.tunnel_hub,
                           "path": "tunnel"})  # fmt: skip
    out = [{**common, **t} for t in targets]
    if interval >= 1.0 and timeout is None:
        # At the production schedule, the bursts of deploy/agent.example.toml and of a discovered
        # gateway: 3 echoes to the router, 5 to the internet host and 3 to the CAD host each round
        # (loss is measured, not guessed from one echo a second), ICMP answered within 500 ms.
        bursts = {"router": 3, "internet": 5, "cad-icmp": 3}  # the router as discovery probes it
        for t in out:
            if t["name"] in bursts:
                t.update(count=bursts[t["name"]], spacing=0.02, timeout=0.5)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def agent_config(
    fixture_file: str,
    state_dir: str,
    token_file: str,
    targets: Sequence[dict[str, Any]],
    *,
    batch_interval: float = 1.0,
    send_timeout: float = 1.0,
) -> str:
    lines = [
        "[agent]",
        f'id = "{AGENT_ID}"',
        f'site = "{SITE}"',
        f'position = "{POSITION}"',
        f"token_file = {json.dumps(token_file)}",
        f"state_dir = {json.dumps(state_dir)}",
        'log_format = "json"',
        "",
        "[schedule]",
        f"batch_interval = {batch_interval!r}",
        "",
        "[discovery]",
        "default_gateways = false",
        "vpn_interfaces = false",
        "",
        "[metrics]",
        "enabled = false",
        "",
        "[providers]",
        'wifi = "fixture"',
        'cellular = "fixture"',
        'power = "fixture"',
        f"fixture_file = {json.dumps(fixture_file)}",
        "traceroute = false",
        "desktop_notify = false",
        "",
        "[collector]",
        "allow_public = true",
        f"timeout = {send_timeout!r}",
        'backup_interface = "usb0"',
        "endpoints = [",
        f'  {{ url = "http://{ADDR.vpnhub_lan}:{COLLECTOR_PORT}" }},',
        f'  {{ url = "http://{ADDR.vpnhub_public}:{COLLECTOR_PORT}", public = true }},',
        "]",
        "",
    ]
    for target in targets:
        lines.append("[[targets]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in target.items()]
        lines.append("")
    return "\n".join(lines)


# -- Lifeline: collector in vpnhub, agent in laptop ---------------------------------------------


def collector_config(workdir: str, webhook_url: str, viewer_token_file: str, *, extra: str = "") -> str:
    """The collector's configuration: reads need a login, as by default; the lab reads with the
    read-only viewer token, as a status display would."""
    return f"""
[server]
listen = "0.0.0.0:{COLLECTOR_PORT}"
public_url = "http://{ADDR.vpnhub_lan}:{COLLECTOR_PORT}"

[store]
path = {json.dumps(os.path.join(workdir, "collector.db"))}

[auth]
viewer_token_file = {json.dumps(viewer_token_file)}

[alerting]
evaluate_interval = "500ms"
{extra}

[[notifiers]]
kind = "webhook"
name = "supervisors"
url = "{webhook_url}"
timeout = "2s"
"""


class LifelineStack:
    """The real collector (vpnhub) and the real agent (laptop), both owned through the lab."""

    def __init__(self, lab: Lab, receiver: WebhookReceiver, *, collector_extra: str = "") -> None:
        self.lab = lab
        self.receiver = receiver
        self.dir = tempfile.mkdtemp(prefix=f"lifeline-{lab.core}-")
        self.token_file = os.path.join(self.dir, "agent.token")
        self.collector_toml = os.path.join(self.dir, "collector.toml")
        self.viewer_token_file = os.path.join(self.dir, "viewer.token")
        self.viewer_token = secrets.token_urlsafe(32)
        self.agent_toml = os.path.join(self.dir, "agent.toml")
        self.state_dir = os.path.join(self.dir, "agent")
        self.agent_runs = 0
        self.agent_pid = 0
        self._collector_extra = collector_extra

    # collector

    def start_collector(self) -> None:
        url = self.receiver.url(self.lab.ns("vpnhub"))
        with open(os.open(self.viewer_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(self.viewer_token + "\n")
        text = collector_config(self.dir, url, self.viewer_token_file, extra=self._collector_extra)
        Path(self.collector_toml).write_text(text)
        if not os.path.exists(self.token_file):
            done = subprocess.run(
                [str(BIN / "lifeline-collector"), "agents", "add", AGENT_ID, "--site", SITE,
                 "--position", POSITION, "--config", self.collector_toml],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            if done.returncode != 0 or not done.stdout.strip():
                raise LabError(f"lifeline-collector agents add failed: {done.stderr.strip()}")
            with open(os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                out.write(done.stdout.strip() + "\n")
        self.lab.popen(
            "vpnhub",
            [str(BIN / "lifeline-collector"), "serve", "--config", self.collector_toml],
            name="collector",
        )
        wait_until(
            lambda: http_get(self.lab.ns("vpnhub"), "127.0.0.1", COLLECTOR_PORT, "/healthz")[0] == 200,
            "the collector to answer /healthz",
            timeout=30.0,
            alive=lambda: self.lab.process_alive("collector"),
        )

    # agent

    def start_agent(self, targets: Sequence[dict[str, Any]] | None = None, **config: Any) -> int:
        """Start a fresh agent process (a fresh health model); returns its PID."""
        self.stop_agent()
        self.agent_runs += 1
        if os.path.isdir(self.state_dir):
            shutil.rmtree(self.state_dir)
        os.makedirs(self.state_dir)
        text = agent_config(
            self.lab.fixture_path, self.state_dir, self.token_file, targets or agent_targets(), **config
        )
        Path(self.agent_toml).write_text(text)
        proc = self.lab.popen(
            "laptop",
            [str(BIN / "lifeline-agent"), "run", "--config", self.agent_toml],
            name="agent",
        )
        self.agent_pid = proc.pid
        wait_until(
            lambda: self.status().get("pid") == proc.pid and self.assessment() is not None,
            "the agent's first assessment in status.json",
            timeout=30.0,
            alive=lambda: self.lab.process_alive("agent"),
        )
        return proc.pid

    def stop_agent(self) -> None:
        self.lab.stop_process("agent")

    def status(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.state_dir, "status.json"), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def assessment(self) -> dict[str, Any] | None:
        status = self.status()
        if status.get("pid") != self.agent_pid:
            return None
        found = status.get("assessment")
        return found if isinstance(found, dict) else None

    def wait_assessment(
        self, condition: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first assessment in status.json for which ``condition`` holds (polled at 10 Hz)."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            current = self.assessment()
            if current is not None and condition(current):
                found.append(current)
                return True
            return False

        try:
            wait_until(check, what, timeout=timeout, alive=lambda: self.lab.process_alive("agent"))
        except LabError as exc:
            raise LabError(f"{exc.what}; last assessment: {self.assessment()}") from None
        return found[0]

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the verdict "healthy" with every layer but power measured and ok."""
        return self.wait_assessment(
            lambda a: (
                a.get("verdict_layer") == "none"
                and a.get("verdict") == "healthy"
                and all(s["state"] == "ok" for s in a["layers"])
            ),
            "a healthy verdict",
            timeout,
        )

    # the collector's data, through its read API with the viewer token

    def position(self, **query: str | int) -> dict[str, Any]:
        """``GET /positions/pos-12`` with ``query``, asked from inside vpnhub."""
        path = f"/positions/{AGENT_ID}" + (f"?{urlencode(query)}" if query else "")
        ns = self.lab.ns("vpnhub")
        status, body = http_get(ns, "127.0.0.1", COLLECTOR_PORT, path, timeout=10.0, token=self.viewer_token)
        try:
            found = json.loads(body) if status == 200 else None
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise LabError(f"GET {path} from the collector: status {status} {body[:200]!r}")
        return found

    def events(self, type_: str, since_ms: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """``(ts_ms, attributes)`` of the agent's events of one type the collector stored."""
        return [
            (int(e["ts_ms"]), dict(e["attributes"]))
            for e in self.position(events=type_, since=since_ms)["events"]
        ]

    def samples(self, name: str, since_ms: int = 0) -> list[tuple[dict[str, str], int, float]]:
        """``(labels, ts_ms, value)`` of one metric the collector stored, oldest first."""
        return [
            (dict(s["labels"]), int(s["ts_ms"]), float(s["value"]))
            for s in self.position(samples=name, since=since_ms)["samples"]
        ]

    def latest_verdict(self) -> dict[str, str] | None:
        """The labels of the newest ``lifeline_verdict_info`` the collector holds at 1."""
        found = [
            (datetime.fromisoformat(s["ts"]), dict(s["labels"]))
            for s in self.position()["series"]
            if s["name"] == "lifeline_verdict_info" and s["value"] == 1
        ]
        return max(found, key=lambda item: item[0])[1] if found else None

    def close(self) -> None:
        self.stop_agent()
        self.lab.stop_process("collector")
        shutil.rmtree(self.dir, ignore_errors=True)
