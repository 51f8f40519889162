"""Every query of every dashboard, run through a real Prometheus scraping a real collector fed by
real agents.

The stack, all on loopback, all started and stopped here:
  - a TCP listener (the "CAD server") and a port nobody listens on (a CAD server that is down);
  - a webhook receiver for the collector's notifier;
  - `lifeline-collector serve` with two registered agents (`lifeline-collector agents add`);
  - `lifeline-agent run` for pos-north-1 (ICMP to 127.0.0.1, TCP to the listener, TCP to the dead
    port; cellular and power from the agent's fixture providers, replaying a plugged-in laptop
    with an LTE hotspot; the TCP_INFO of a CAD client session this test holds open) and for pos-south-1, which is killed once it has
    reported so that it turns silent;
  - `/usr/bin/prometheus` with the shipped prometheus.yml (scrape and evaluation interval 1 s, the
    collector's port) and the shipped rules, unchanged;
  - a supervisor who acknowledges pos-south-1's silence alert through the API (admin token) and an
    operator who silences a site with `lifeline-collector silences add`, so the Alerts dashboard's
    time to acknowledge and silences have data.
Then each panel target, variable and annotation query runs through `/api/v1/query`: any error
fails, and an empty result fails unless the panel is in PENDING (with the reason it has no data
in this stack yet).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NORTH, SOUTH = "pos-north-1", "pos-south-1"
ADMIN_TOKEN = "ops-stack-admin-token-0123456789"
NO_BACKUP = "no backup interface in this loopback stack (the lab tests cover failover readiness)"
NO_VPN = "no VPN tunnel in this stack (the lab's WireGuard tests cover it)"
# Panels that must not error but may be empty in this stack, and why. Everything else must have
# data. A panel that has data anyway must leave this list (the test says so).
PENDING: dict[tuple[str, str], str] = {
    ("lifeline-fleet", "Backup not ready"): NO_BACKUP,
    ("lifeline-fleet", "Backup path by position"): NO_BACKUP,
    ("lifeline-fleet", "Positions on backup and backup not ready by site"): NO_BACKUP,
    ("lifeline-position", "Interface traffic"): NO_BACKUP,
    ("lifeline-fleet", "Remote write"): "remote-write is not configured in this stack",
    ("lifeline-position", "Backup path"): NO_BACKUP,
    ("lifeline-position", "VPN handshake age"): NO_VPN,
    ("lifeline-position", "VPN tunnel"): NO_VPN,
    ("lifeline-position", "Tunnel traffic"): NO_VPN,
}
# Grafana's built-in variables, as Grafana would fill them for a one-hour view with 1 s scrapes.
BUILTIN_VARS = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "1h"}
# Template variables per dashboard: the fleet views show all, the position view one position.
TEMPLATE_VARS = {
    "lifeline-fleet": {"site": ".*", "agent": ".*"},
    "lifeline-alerts": {"site": ".*", "agent": ".*"},
    "lifeline-position": {"site": ".*", "agent": NORTH},
}


def substitute(dashboard: str, expr: str) -> str:
    for name, value in BUILTIN_VARS.items():
        expr = expr.replace(name, value)
    for name, value in TEMPLATE_VARS[dashboard].items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


# --------------------------------------------------------------------------- small real peers


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _post(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> dict[str, Any]:
        """/api/v1/query; returns the whole answer (status error included, never raises on 400/422)."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = _get(url)
        except urllib.error.HTTPError as exc:
            body = exc.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def vector(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def api(self, path: str) -> Any:
        return json.loads(_get(self.base + path))["data"]


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Stack:
    prometheus: Prometheus
    collector_url: str
    agent_metrics_url: str
    tmp: Path
    logs: dict[str, Path] = field(default_factory=dict)
    acknowledged: dict[str, Any] = field(default_factory=dict)  # the ack API's answer

    def describe(self) -> str:
        """The tail of every process log, for a failure message."""
        return "\n".join(
            f"--- {name}:\n" + path.read_text(errors="replace")[-3000:] for name, path in self.logs.items()
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{describe()}")
        time.sleep(0.25)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# What the cellular and power providers of a plugged-in laptop with an LTE hotspot read, and its
# Wi-Fi provider on good Wi-Fi (replayed by the agent's fixture backends: no radio or battery).
FIXTURE = json.dumps(
    {
        "ts_ms": 0,  # in force from the start
        "wifi": {"interface": "wlan0", "associated": True, "signal_dbm": -58, "bitrate_bps": 144_400_000,
                 "retries": 12},
        "cellular": {"modem": "0", "state": "connected", "access_technology": "lte", "signal_quality": 0.71,
                     "rsrp_dbm": -92, "rsrq_db": -11, "sinr_db": 13},
        "power": {"on_ac": True, "battery_ratio": 0.97, "secs_left": 19_800},
    }
)  # fmt: skip


def _agent_config(
    tmp: Path,
    agent: str,
    site: str,
    collector: str,
    targets: str,
    metrics_port: int,
    fixture: Path | None = None,
) -> Path:
    state = tmp / agent
    local = "off" if fixture is None else "fixture"
    token = tmp / f"{agent}.token"
    path = tmp / f"{agent}.toml"
    path.write_text(
        f"""
[agent]
id = "{agent}"
site = "{site}"
position = "console {agent[-1]}"
token_file = "{token}"
state_dir = "{state}"

[schedule]
batch_interval = "1s"
default_interval = "500ms"

[discovery]
default_gateways = false
vpn_interfaces = false

[collector]
endpoints = [{{ url = "{collector}" }}]
timeout = "2s"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[providers]
wifi = "{local}"
cellular = "{local}"
power = "{local}"
fixture_file = "{fixture or ""}"
cad_sessions = {"true" if fixture is not None else "false"}
netlink = false
traceroute = false
desktop_notify = false
{targets}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not tmp_path: the TSDB and spools are removed as soon as the module is done.
    tmp = Path(tempfile.mkdtemp(prefix="lifeline-stack-"))
    procs: list[subprocess.Popen[bytes]] = []
    opened: list[Any] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (tmp / f"{name}.log").open("wb")
        opened.append(log)
        stack.logs[name] = tmp / f"{name}.log"
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        procs.append(proc)
        return proc

    # The CAD server: accepts and closes the agent's probes, and keeps the session of the CAD
    # client (a socket of this test, held open: the agent reads its TCP_INFO, never its data).
    # The dead CAD server: a port nobody listens on.
    cad = socket.create_server(("127.0.0.1", 0))
    cad.settimeout(0.2)
    cad_port = cad.getsockname()[1]
    dead_port = _free_port()
    running = threading.Event()
    running.set()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.bind(("127.0.0.1", 0))
    client_port = client.getsockname()[1]
    kept: list[socket.socket] = []

    def accept() -> None:
        while running.is_set():
            with contextlib.suppress(OSError):
                conn, peer = cad.accept()
                if peer[1] == client_port:
                    kept.append(conn)
                else:
                    conn.close()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    client.connect(("127.0.0.1", cad_port))
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    hook_thread = threading.Thread(target=hook.serve_forever, daemon=True)
    hook_thread.start()

    collector_port, prom_port, north_metrics, south_metrics = (_free_port() for _ in range(4))
    collector_url = f"http://127.0.0.1:{collector_port}"
    stack = Stack(Prometheus(f"http://127.0.0.1:{prom_port}"), collector_url,
                  f"http://127.0.0.1:{north_metrics}/metrics", tmp)  # fmt: skip
    try:
        collector_toml = tmp / "collector.toml"
        store = tmp / "collector.db"
        admin_token = tmp / "admin.token"
        admin_token.write_text(ADMIN_TOKEN, encoding="utf-8")
        collector_toml.write_text(
            f"""
[server]
listen = "127.0.0.1:{collector_port}"
public_url = "{collector_url}"

[store]
path = "{store}"

[alerting]
cad_failures = 3
silent_after = "2s"
evaluate_interval = "250ms"

[exposition]
stale_after = "10m"

[api]
admin_token_file = "{admin_token}"

[auth]
read_access = "open"

[[notifiers]]
kind = "webhook"
name = "supervisor-pager"
url = "http://127.0.0.1:{hook.server_address[1]}/hooks/lifeline"
timeout = "2s"
""",
            encoding="utf-8",
        )
        for agent, site in ((NORTH, "north"), (SOUTH, "south")):
            done = subprocess.run(
                [BIN / "lifeline-collector", "agents", "add", agent, "--site", site,
                 "--position", f"console {agent[-1]}", "--config", collector_toml],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            (tmp / f"{agent}.token").write_text(done.stdout.strip().splitlines()[-1], encoding="utf-8")

        start("collector", [str(BIN / "lifeline-collector"), "serve", "--config", str(collector_toml)])
        _wait("the collector", lambda: _ok(collector_url + "/healthz"), 30, stack.describe)

        north_targets = f"""
[[targets]]
name = "loopback"
role = "router"
kind = "icmp"
host = "127.0.0.1"
path = "primary"
count = 3
spacing = "20ms"
timeout = "200ms"

[[targets]]
name = "cad-primary"
role = "cad"
kind = "tcp"
host = "127.0.0.1"
port = {cad_port}
path = "tunnel"
timeout = "300ms"

[[targets]]
name = "cad-standby"
role = "cad"
kind = "tcp"
host = "127.0.0.1"
port = {dead_port}
path = "tunnel"
timeout = "300ms"
"""
        south_targets = """
[[targets]]
name = "loopback"
role = "router"
kind = "icmp"
host = "127.0.0.1"
path = "primary"
"""
        fixture = tmp / "north-fixture.jsonl"
        fixture.write_text(FIXTURE, encoding="utf-8")
        north = _agent_config(tmp, NORTH, "north", collector_url, north_targets, north_metrics, fixture)
        south = _agent_config(tmp, SOUTH, "south", collector_url, south_targets, south_metrics)
        start(NORTH, [str(BIN / "lifeline-agent"), "run", "--config", str(north)])
        south_proc = start(SOUTH, [str(BIN / "lifeline-agent"), "run", "--config", str(south)])

        # The shipped Prometheus config, with only the intervals and addresses of this stack
        # changed, beside a link to the shipped rules (rule_files are relative to the config).
        prom_dir = tmp / "prometheus"
        prom_dir.mkdir()
        (prom_dir / "rules").symlink_to(ROOT / "deploy" / "prometheus" / "rules")
        config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
        for old, new in (
            ("scrape_interval: 5s", "scrape_interval: 1s"),
            ("evaluation_interval: 5s", "evaluation_interval: 1s"),
            ('"127.0.0.1:8480"', f'"127.0.0.1:{collector_port}"'),
            ('"127.0.0.1:9093"', f'"127.0.0.1:{dead_port}"'),
        ):
            assert config.count(old) == 1, old
            config = config.replace(old, new)
        (prom_dir / "prometheus.yml").write_text(config, encoding="utf-8")
        start("prometheus", [
            PROMETHEUS, f"--config.file={prom_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        ])  # fmt: skip
        prom = stack.prometheus
        _wait("Prometheus", lambda: _ok(prom.base + "/-/ready"), 30, stack.describe)

        def has(expr: str) -> bool:
            return bool(prom.query(expr).get("data", {}).get("result"))

        # A broken agent: pos-south-1's token with a body that is not the contract. The collector
        # refuses it (422 naming the field) and counts it, so the refusals query has data.
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"{collector_url}/api/v1/ingest", {"version": 1}, (tmp / f"{SOUTH}.token").read_text())
        assert refused.value.code == 422, refused.value.read()

        # pos-south-1 reports, then goes dark: the collector must call it silent.
        _wait(f"{SOUTH} in Prometheus", lambda: has(f'lifeline_probe_success{{agent="{SOUTH}"}}'), 60,
              stack.describe)  # fmt: skip
        # Killed, not stopped: an agent stopped on purpose signs off and is not paged as silent.
        south_proc.kill()
        south_proc.wait()
        for expr in (
            f'lifeline_agent_up{{agent="{SOUTH}"}} == 0',
            f'lifeline_probe_success{{agent="{NORTH}", target="cad-primary"}} == 1',
            f'lifeline_probe_consecutive_failures{{agent="{NORTH}", target="cad-standby"}} >= 3',
            'lifeline_alerts_active{alertname="PositionSilent", state="firing"} > 0',
            'lifeline_notifications_total{result="ok"} > 0',
            f'ALERTS{{alertname="CadTargetUnreachable", alertstate="firing", agent="{NORTH}"}}',
            # Rates over $__rate_interval need two scrapes of a changed counter in the window.
            f'rate(lifeline_agent_batches_sent_total{{agent="{NORTH}"}}[10s]) > 0',
            f'agent_role_path:lifeline_probe_loss_ratio:rate1m{{agent="{NORTH}"}}',
        ):
            _wait(expr, lambda expr=expr: has(expr), 60, stack.describe)

        # The collector pages no CAD alert for pos-north-1: its CAD layer works (cad-primary answers),
        # so a dead standby is Prometheus' own CadTargetUnreachable above, not a page. A supervisor
        # acknowledges pos-south-1's silence (API, admin token); an operator silences a site that
        # has no positions (CLI, straight into the store; the collector reloads it).
        alerts = json.loads(_get(collector_url + "/api/v1/alerts?site=south"))
        (silent_alert,) = [a for a in alerts if a["labels"]["alertname"] == "PositionSilent"]
        stack.acknowledged = _post(
            f"{collector_url}/api/v1/alerts/{silent_alert['fingerprint']}/ack",
            {"by": "sup-ana", "comment": "ops stack test"},
            ADMIN_TOKEN,
        )
        done = subprocess.run(
            [BIN / "lifeline-collector", "silences", "add", "--matcher", "site=west", "--duration", "1h",
             "--by", "ops-test", "--comment", "no such site", "--config", collector_toml],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for expr in (
            'increase(lifeline_alert_acknowledgements_total{alertname="PositionSilent", site="south"}[1h])'
            " > 0",
            "lifeline_silences_active == 1",
        ):
            _wait(expr, lambda expr=expr: has(expr), 60, stack.describe)
        yield stack
    finally:
        for proc in reversed(procs):
            _stop(proc)
        running.clear()
        acceptor.join(timeout=5)
        client.close()
        for conn in kept:
            conn.close()
        cad.close()
        hook.shutdown()
        hook.server_close()
        for log in opened:
            log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _ok(url: str) -> bool:
    try:
        _get(url, timeout=2)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- the tests

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_pending_list_names_real_panels(queries: list[Any]) -> None:
    panels = {(q.dashboard, q.panel) for q in queries if q.kind == "panel"}
    assert set(PENDING) <= panels, sorted(set(PENDING) - panels)


def test_prometheus_scrapes_the_collector_and_evaluates_every_rule(stack: Stack) -> None:
    targets = stack.prometheus.api("/api/v1/targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("lifeline-collector", "up")]
    rules = [r for g in stack.prometheus.api("/api/v1/rules")["groups"] for r in g["rules"]]
    assert len(rules) >= 15
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
    # honor_labels: the collector's agent/site labels stay as they are, not exported_*.
    series = stack.prometheus.vector(f'lifeline_probe_success{{agent="{NORTH}"}}')
    assert {s["metric"]["site"] for s in series} == {"north"}
    assert not any(k.startswith("exported_") for s in series for k in s["metric"])


def test_every_dashboard_query_runs(stack: Stack, queries: list[Any]) -> None:
    errors: list[str] = []
    empty: list[str] = []
    # A pending panel leaves PENDING once every one of its queries returns data.
    pending_full: dict[tuple[str, str], list[str]] = {}
    pending_empty: set[tuple[str, str]] = set()
    for q in queries:
        expr = substitute(q.dashboard, q.expr)
        answer = stack.prometheus.query(expr)
        where = f"{q.dashboard}: {q.panel} {q.ref}: {expr}"
        if answer["status"] != "success":
            errors.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}")
            continue
        result = answer["data"]["result"]
        if q.kind == "annotation":
            continue  # events: empty unless something happened
        pending = (q.dashboard, q.panel) in PENDING
        if not result and not pending:
            empty.append(where)
        if pending:
            if result:
                pending_full.setdefault((q.dashboard, q.panel), []).append(where)
            else:
                pending_empty.add((q.dashboard, q.panel))
        for series in result:
            # Every {{label}} of the legend must be a label of what the query returns.
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", q.legend):
                if label not in series["metric"]:
                    errors.append(f"{where}: legend label {label!r} not in {series['metric']}")
    assert not errors, "\n".join(errors)
    assert not empty, "panels without data:\n" + "\n".join(empty) + "\n" + stack.describe()
    pending_with_data = [
        w for key, wheres in pending_full.items() if key not in pending_empty for w in wheres
    ]
    assert not pending_with_data, "these have data now; take them out of PENDING:\n" + "\n".join(
        pending_with_data
    )


def test_time_to_acknowledge_shows_the_supervisors_ack(stack: Stack, queries: list[Any]) -> None:
    ack = stack.acknowledged["status"]["acknowledged"]
    assert (ack["by"], ack["comment"]) == ("sup-ana", "ops stack test")
    (table,) = [q for q in queries if q.panel == "Time to acknowledge by alert and site"]
    rows = stack.prometheus.vector(substitute(table.dashboard, table.expr))
    assert [(r["metric"]["alertname"], r["metric"]["site"]) for r in rows] == [("PositionSilent", "south")]
    assert float(rows[0]["value"][1]) > 0  # acknowledged after Prometheus saw it firing
    (silences,) = [q for q in queries if q.panel == "Silences in force"]
    (row,) = stack.prometheus.vector(substitute(silences.dashboard, silences.expr))
    assert row["value"][1] == "1"


def test_template_variables_find_the_agents(stack: Stack, queries: list[Any]) -> None:
    for q in (q for q in queries if q.kind == "variable"):
        selector = substitute(q.dashboard, q.expr)
        values = stack.prometheus.api(
            f"/api/v1/label/{q.ref}/values?" + urllib.parse.urlencode({"match[]": selector})
        )
        expected = {"site": {"north", "south"}, "agent": {NORTH, SOUTH}}[q.ref]
        assert set(values) == expected, (q.dashboard, q.panel, values)


def test_annotations_mark_prometheus_alerts(stack: Stack, queries: list[Any]) -> None:
    (alerts,) = [q for q in queries if q.panel == "annotation Alerts (Prometheus rules)"]
    result = stack.prometheus.vector(substitute(alerts.dashboard, alerts.expr))
    assert "CadTargetUnreachable" in {s["metric"]["alertname"] for s in result}


@pytest.mark.parametrize("which", ["collector", "agent"])
def test_promtool_check_metrics(stack: Stack, which: str) -> None:
    url = stack.collector_url + "/metrics" if which == "collector" else stack.agent_metrics_url
    exposition = _get(url)
    assert b"lifeline_probe_success" in exposition
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False,
        env={**os.environ, "LC_ALL": "C"},
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
