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
    assert "3 inhibit rules" in done.stdout


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
    deadline = time.monotonic() + 20
    while True:
        alerts = {
            (a["labels"]["alertname"], a["labels"].get("agent", "")): a
            for a in _api(alertmanager, "/api/v2/alerts")
        }
        states = {key: a["status"]["state"] for key, a in alerts.items()}
        if len(states) == 4 and "unprocessed" not in states.values():
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert states == {
        ("FleetIncident", ""): "active",
        ("CadTargetUnreachable", "pos-1"): "suppressed",
        ("PositionSilent", "pos-2"): "suppressed",
        ("CadTargetUnreachable", "pos-9"): "active",
    }
    fleet = alerts[("FleetIncident", "")]["fingerprint"]
    assert alerts[("CadTargetUnreachable", "pos-1")]["status"]["inhibitedBy"] == [fleet]
    # Routing as amtool said: the site's supervisors and IT staff.
    receivers = {r["name"] for r in alerts[("CadTargetUnreachable", "pos-9")]["receivers"]}
    assert receivers == {"it-staff", "supervisors-south"}
