"""The Alertmanager example passes amtool, routes by site, and a real Alertmanager inhibits with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_check_config() -> None:
    done = amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    assert "4 inhibit rules" in done.stdout


def test_amtool_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(
        CONFIG.read_text(encoding="utf-8").replace("receiver: supervisors-south", "receiver: nobody")
    )
    assert amtool("check-config", str(broken)).returncode != 0


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["site=north", "alertname=CadTargetUnreachable", "severity=critical"], "it-staff,supervisors-north"),
        (["site=north", "alertname=FailoverNotReady", "severity=warning"], "it-staff,supervisors-north"),
        (["site=south", "alertname=PositionSilent", "severity=critical"], "it-staff,supervisors-south"),
        (["site=south", "alertname=FleetIncident", "severity=critical"], "it-staff,supervisors-south"),
        # The collector's incidents carry cause and dependency: routed by site all the same.
        (
            [
                "site=north",
                "alertname=FleetIncident",
                "severity=critical",
                "cause=vpn",
                "dependency=vpn.agency.example",
            ],
            "it-staff,supervisors-north",
        ),
        (
            ["site=north", "alertname=CadAtRisk", "severity=warning", "agent=pos-12"],
            "it-staff,supervisors-north",
        ),
        # A site with no supervisors' route still reaches IT, once.
        (["site=west", "alertname=PositionSilent", "severity=critical"], "it-staff"),
        (["alertname=LifelineCollectorDown", "severity=critical"], "it-staff"),
    ],
)
def test_routing_by_site(labels: list[str], receivers: str) -> None:
    done = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == receivers


def _api(base: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _settled(
    base: str, key: Callable[[dict[str, Any]], tuple[str, ...]], expected: dict[Any, str]
) -> dict[Any, dict[str, Any]]:
    """Alertmanager's alerts by ``key`` once their states are ``expected``, or as they are after
    20 s. It marks a target suppressed only once its inhibitor has seen the source alert, which
    can come after the targets are processed, so the marks are read until they settle."""
    deadline = time.monotonic() + 20
    while True:
        alerts = {key(a): a for a in _api(base, "/api/v2/alerts")}
        if {k: a["status"]["state"] for k, a in alerts.items()} == expected or time.monotonic() > deadline:
            return alerts
        time.sleep(0.2)


@pytest.fixture
def alertmanager(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[str]:
    """A real Alertmanager on loopback running the shipped config, no cluster."""
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={CONFIG}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _alert(**labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": labels,
        "annotations": {"summary": f"{labels['alertname']} test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }


@pytest.mark.system
def test_fleet_incident_mutes_position_pages_of_its_site_only(alertmanager: str) -> None:
    _api(
        alertmanager,
        "/api/v2/alerts",
        [
            _alert(alertname="FleetIncident", site="north", severity="critical"),
            _alert(alertname="CadTargetUnreachable", site="north", agent="pos-1", severity="critical"),
            _alert(alertname="PositionSilent", site="north", agent="pos-2", severity="critical"),
            _alert(alertname="CadTargetUnreachable", site="south", agent="pos-9", severity="critical"),
        ],
    )
    expected = {
        ("FleetIncident", ""): "active",
        ("CadTargetUnreachable", "pos-1"): "suppressed",
        ("PositionSilent", "pos-2"): "suppressed",
        ("CadTargetUnreachable", "pos-9"): "active",
    }
    alerts = _settled(
        alertmanager, lambda a: (a["labels"]["alertname"], a["labels"].get("agent", "")), expected
    )
    assert {key: a["status"]["state"] for key, a in alerts.items()} == expected
    fleet = alerts[("FleetIncident", "")]["fingerprint"]
    assert alerts[("CadTargetUnreachable", "pos-1")]["status"]["inhibitedBy"] == [fleet]
    # Routing as amtool said: the site's supervisors and IT staff.
    receivers = {r["name"] for r in alerts[("CadTargetUnreachable", "pos-9")]["receivers"]}
    assert receivers == {"it-staff", "supervisors-south"}


# --- the collector's own alerts, as its alertmanager notifier sends them ----------------------------

PATH_LAYERS = ("link", "router", "internet", "vpn", "agency", "dns", "cad")


def _judgement(ms: int, failed: tuple[str, ...] = (), power: str = "ok", verdict: str = "none") -> list[Any]:
    """What an agent's health model reports: every layer's state, the verdict, risk and backup."""
    from lifeline_wire import Sample
    from lifeline_wire.catalog.health import STATES
    from lifeline_wire.layers import LAYERS

    states = {layer: "failed" if layer in failed else "ok" for layer in LAYERS}
    states["power"] = power
    out = [
        Sample("lifeline_layer_state", float(STATES[s]), ms, {"layer": layer}) for layer, s in states.items()
    ]
    words = {"none": "healthy", "vpn": "VPN tunnel down, internet fine", "router": "home router unreachable"}
    out.append(
        Sample("lifeline_verdict_info", 1.0, ms, {"layer": verdict, "verdict": words.get(verdict, verdict)})
    )
    out += [
        Sample("lifeline_cad_risk_ratio", 1.0 if failed else 0.0, ms),
        Sample("lifeline_cad_time_to_loss_seconds", 0.0 if failed else float("inf"), ms),
        Sample("lifeline_failover_ready", 1.0, ms),
        Sample("lifeline_on_backup", 0.0, ms),
    ]
    if "vpn" in failed:
        labels = {"target": "vpn.agency.example", "role": "vpn", "path": "tunnel", "kind": "icmp"}
        out.append(Sample("lifeline_probe_success", 0.0, ms, labels))
    return out


def collector_alerts(tmp_path: Path) -> list[dict[str, Any]]:
    """Alerts of a real Collector (manual clock) in Alertmanager's v2 shape, from its notifier's payload.

    north: three of four positions lose the VPN concentrator (one FleetIncident, cause vpn), the
    fourth is on battery; south: one position loses the VPN alone; east: two of three positions
    go silent together (FleetIncident, cause silent) while the third loses its home router.
    """
    from lifeline_collector.alerting.alert import group_of
    from lifeline_collector.clock import ManualClock, SystemClock
    from lifeline_collector.config import parse
    from lifeline_collector.notify.alertmanager import payload
    from lifeline_collector.notify.base import NotifyContext
    from lifeline_collector.service import Collector
    from lifeline_wire import Batch, Envelope

    clock = ManualClock(time.time() - 60)
    service = Collector(parse({"store": {"path": str(tmp_path / "collector.db")}}, "(test)"), clock=clock)
    sites = {"north": 4, "south": 1, "east": 3}
    seqs: dict[str, int] = {}
    try:
        for site, count in sites.items():
            for n in range(1, count + 1):
                service.store.add_agent(
                    f"{site}-{n}", site=site, position=str(n), now_ms=int(clock.now() * 1000)
                )

        def report(agent: str, samples: list[Any]) -> None:
            row = service.store.agent(agent)
            assert row is not None
            ms = int(clock.now() * 1000)
            seq = seqs[agent] = seqs.get(agent, -1) + 1
            service.ingest(
                row, Envelope(version=1, batches=[Batch(agent, "b1", seq, ms, samples)], sent_ms=ms)
            )

        for site, count in sites.items():
            for n in range(1, count + 1):
                report(f"{site}-{n}", _judgement(int(clock.now() * 1000)))
        clock.advance(30)  # east-1 and east-2 say nothing more: silent
        ms = int(clock.now() * 1000)
        vpn_down = ("vpn", "agency", "dns", "cad")
        for agent in ("north-1", "north-2", "north-3", "south-1"):
            report(agent, _judgement(ms, vpn_down, verdict="vpn"))
        report("north-4", _judgement(ms, power="degraded"))
        report(
            "east-3", _judgement(ms, ("router", "internet", "vpn", "agency", "dns", "cad"), verdict="router")
        )
        service.tick()
        context = NotifyContext("http://collector.example", SystemClock(), resend_interval=60.0)
        return [item for alert in service.engine.active() for item in payload(group_of(alert), context)]
    finally:
        service.store.close()


@pytest.mark.system
def test_collector_fleet_incidents_mute_only_what_they_explain(alertmanager: str, tmp_path: Path) -> None:
    alerts = collector_alerts(tmp_path)
    incidents = sorted(
        (a["labels"]["site"], a["labels"]["cause"], a["labels"]["dependency"])
        for a in alerts
        if a["labels"]["alertname"] == "FleetIncident"
    )
    assert incidents == [("east", "silent", "collector"), ("north", "vpn", "vpn.agency.example")]
    _api(alertmanager, "/api/v2/alerts", alerts)
    expected = {
        ("FleetIncident", "vpn", "", "critical"): "active",
        ("PositionLayerFailed", "north-1", "vpn", "critical"): "suppressed",
        ("PositionLayerFailed", "north-2", "vpn", "critical"): "suppressed",
        ("PositionLayerFailed", "north-3", "vpn", "critical"): "suppressed",
        # The home's own warning is no part of the incident.
        ("PositionLayerFailed", "north-4", "power", "warning"): "active",
        # One position of a site losing the VPN is not an incident.
        ("PositionLayerFailed", "south-1", "vpn", "critical"): "active",
        ("FleetIncident", "silent", "", "critical"): "active",
        ("PositionSilent", "east-1", "", "critical"): "suppressed",
        ("PositionSilent", "east-2", "", "critical"): "suppressed",
        # A silent-positions incident does not explain a reporting position's broken router.
        ("PositionLayerFailed", "east-3", "router", "critical"): "active",
    }
    settled = _settled(
        alertmanager,
        lambda a: (
            a["labels"]["alertname"],
            a["labels"].get("agent") or a["labels"]["cause"],
            a["labels"].get("layer", ""),
            a["labels"]["severity"],
        ),
        expected,
    )
    assert {key: a["status"]["state"] for key, a in settled.items()} == expected
