"""Lifeline and the conventional monitoring stack, running in a lab, paging one webhook receiver.

Where things run (one choice for tests, benchmarks and demos)::

    laptop   lifeline-agent (the position)        blackbox_exporter + Prometheus + Alertmanager
    vpnhub   lifeline-collector on 0.0.0.0:8480   ← the agency edge: 10.20.0.1 through the tunnel,
                                                    203.0.113.10 from the internet (public fallback)
    both     the test's WebhookReceiver, on each namespace's own loopback

The collector runs on the VPN concentrator's box, so the agent reaches it through the tunnel
(``http://10.20.0.1:8480``) and, when the tunnel is down, over the internet on the concentrator's
public address (``http://203.0.113.10:8480``, an endpoint marked ``public`` with
``allow_public = true``) by the primary or, bound to usb0, the hotspot — the fallback design
decision 4 describes. Breaking the agency LAN (vpnhub ⇄ cad) leaves the collector reachable.

The conventional stack runs beside the agent in the laptop namespace: its scrapes and its webhook
never cross a lab impairment, which is its best case (at an agency, Prometheus would scrape the
exporter through the same VPN it is watching).

Every process is started through the ``Lab`` (it ends them by PID on teardown) and stopped by
``close()``; every file lives in a private temporary directory that ``close()`` removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lifeline_lab import fixtures, impair
from lifeline_lab.errors import LabError
from lifeline_lab.netns import http_get, http_json, listener_in
from lifeline_lab.topology import ADDR, CAD_NAME, CAD_PORT, Lab

BIN = Path(sys.executable).parent
COLLECTOR_PORT = 8480
AGENT_ID = "pos-12"
SITE = "north"
POSITION = "12"
BLACKBOX = "prometheus-blackbox-exporter"
PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


# -- the webhook receiver -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert of one webhook payload, stamped with the receiver's wall clock."""

    at: float
    via: str  # the namespace it came in from
    receiver: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


class WebhookReceiver:
    """An Alertmanager-format webhook receiver listening on the loopback of several namespaces."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._items: list[Notification] = []
        self.ports: dict[str, int] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        try:
            for ns in namespaces:
                self._listen(ns)
        except BaseException:
            self.close()
            raise

    def _listen(self, ns: str) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._record(at, ns, payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = listener_in(ns)
        server.server_address = server.socket.getsockname()
        self.ports[ns] = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, name=f"webhook-{ns}", daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)

    def url(self, ns: str) -> str:
        return f"http://127.0.0.1:{self.ports[ns]}/hook"

    def _record(self, at: float, ns: str, payload: dict[str, Any]) -> None:
        receiver = str(payload.get("receiver", ""))
        items = [
            Notification(
                at,
                ns,
                receiver,
                str(alert.get("status", "")),
                {str(k): str(v) for k, v in (alert.get("labels") or {}).items()},
                {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()},
            )
            for alert in payload.get("alerts") or []
        ]
        with self._lock:
            self._items.extend(items)

    def notifications(
        self, *, via: str | None = None, since: float = 0.0, status: str | None = None
    ) -> list[Notification]:
        with self._lock:
            items = list(self._items)
        return [
            n
            for n in items
            if (via is None or n.via == via) and n.at >= since and (status is None or n.status == status)
        ]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers.clear()
        self._threads.clear()


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


def collector_config(workdir: str, webhook_url: str, *, extra: str = "") -> str:
    return f"""
[server]
listen = "0.0.0.0:{COLLECTOR_PORT}"
public_url = "http://{ADDR.vpnhub_lan}:{COLLECTOR_PORT}"

[store]
path = {json.dumps(os.path.join(workdir, "collector.db"))}

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
        self.db_path = os.path.join(self.dir, "collector.db")
        self.agent_toml = os.path.join(self.dir, "agent.toml")
        self.state_dir = os.path.join(self.dir, "agent")
        self.agent_runs = 0
        self.agent_pid = 0
        self._collector_extra = collector_extra

    # collector

    def start_collector(self) -> None:
        url = self.receiver.url(self.lab.ns("vpnhub"))
        Path(self.collector_toml).write_text(collector_config(self.dir, url, extra=self._collector_extra))
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

    def agent_log(self) -> str:
        rec = self.lab.procs.get("agent")
        if rec is None:
            return ""
        with contextlib.suppress(OSError):
            return Path(rec.log).read_text(errors="replace")[-6000:]
        return ""

    # the collector's store, read-only

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)
        try:
            yield db
        finally:
            db.close()

    def events(self, type_: str, since_ms: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """``(ts_ms, attributes)`` of the agent's events of one type the collector stored."""
        with self._db() as db:
            rows = db.execute(
                "SELECT ts_ms, attributes FROM events WHERE agent = ? AND type = ? AND ts_ms >= ?"
                " ORDER BY ts_ms",
                (AGENT_ID, type_, since_ms),
            ).fetchall()
        return [(int(ts), json.loads(attrs)) for ts, attrs in rows]

    def samples(self, name: str, since_ms: int = 0) -> list[tuple[dict[str, str], int, float]]:
        """``(labels, ts_ms, value)`` of one metric the collector stored, oldest first (the store
        keeps each batch's samples as one blob: decoded here)."""
        from lifeline_collector.store import unpack_samples

        with self._db() as db:
            rows = db.execute(
                "SELECT codec, samples FROM batches WHERE agent = ? AND sample_count > 0 AND max_ts >= ?"
                " ORDER BY id",
                (AGENT_ID, since_ms),
            ).fetchall()
        out = [
            (dict(sample.labels), sample.ts_ms, sample.number)
            for codec, blob in rows
            for sample in unpack_samples(int(codec), blob)
            if sample.name == name and sample.ts_ms >= since_ms
        ]
        out.sort(key=lambda row: row[1])
        return out

    def latest_verdict(self) -> dict[str, str] | None:
        """The labels of the newest ``lifeline_verdict_info`` the collector holds."""
        found = [(ts, labels) for labels, ts, value in self.samples("lifeline_verdict_info") if value == 1]
        return max(found, key=lambda item: item[0])[1] if found else None

    def close(self) -> None:
        self.stop_agent()
        self.lab.stop_process("collector")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the conventional stack: blackbox_exporter + Prometheus + Alertmanager ----------------------

PROBE_RULE = "BlackboxProbeFailed"
BLACKBOX_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT = 9115, 9090, 9093


@dataclass(frozen=True, slots=True)
class ConventionalSettings:
    """What the stack is tuned to; the defaults are the ones its documentation gives."""

    scrape_interval: float = 5.0  # the benchmark's 5 s scrape
    evaluation_interval: float = 5.0  # rules evaluated at the scrape rate
    rule_for: float = 0.0  # `probe_success == 0` for 0m, the usual blackbox rule
    group_wait: float = 30.0  # Alertmanager's documented default
    group_interval: float = 300.0  # Alertmanager's documented default
    modules: tuple[str, ...] = ("icmp", "tcp_connect")

    def describe(self) -> str:
        return (
            f"blackbox_exporter {'+'.join(self.modules)} → Prometheus (scrape {self.scrape_interval:g} s,"
            f" rules every {self.evaluation_interval:g} s, probe_success == 0 for {self.rule_for:g}s) →"
            f" Alertmanager (group_wait {self.group_wait:g} s)"
        )


BLACKBOX_YML = """modules:
  icmp:
    prober: icmp
    timeout: 4s
    icmp:
      preferred_ip_protocol: ip4
  tcp_connect:
    prober: tcp
    timeout: 4s
    tcp:
      preferred_ip_protocol: ip4
"""


class ConventionalStack:
    """blackbox_exporter, Prometheus and Alertmanager in the laptop namespace, owned by the lab."""

    def __init__(
        self, lab: Lab, receiver: WebhookReceiver, settings: ConventionalSettings | None = None
    ) -> None:
        self.lab = lab
        self.receiver = receiver
        self.settings = settings or ConventionalSettings()
        self.ns = lab.ns("laptop")
        self.dir = tempfile.mkdtemp(prefix=f"conventional-{lab.core}-")
        self.paths = {
            name: os.path.join(self.dir, name)
            for name in ("blackbox.yml", "prometheus.yml", "rules.yml", "alertmanager.yml")
        }

    def start(self) -> None:
        self._write_configs()
        self.lab.popen(
            "laptop",
            [BLACKBOX, f"--config.file={self.paths['blackbox.yml']}",
             f"--web.listen-address=127.0.0.1:{BLACKBOX_PORT}"],
            name="blackbox",
        )  # fmt: skip
        self._ready("blackbox", BLACKBOX_PORT, "/-/healthy")
        self.start_alerting()

    def start_alerting(self) -> None:
        am_dir, prom_dir = os.path.join(self.dir, "am"), os.path.join(self.dir, "prom")
        self.lab.popen(
            "laptop",
            [ALERTMANAGER, f"--config.file={self.paths['alertmanager.yml']}", f"--storage.path={am_dir}",
             f"--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}", "--cluster.listen-address="],
            name="alertmanager",
        )  # fmt: skip
        self.lab.popen(
            "laptop",
            [PROMETHEUS, f"--config.file={self.paths['prometheus.yml']}", f"--storage.tsdb.path={prom_dir}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            name="prometheus",
        )  # fmt: skip
        self._ready("alertmanager", ALERTMANAGER_PORT, "/-/ready")
        self._ready("prometheus", PROMETHEUS_PORT, "/-/ready")

    def stop_alerting(self) -> None:
        for name in ("prometheus", "alertmanager"):
            self.lab.stop_process(name)
        for sub in ("am", "prom"):
            shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)

    def _ready(self, name: str, port: int, path: str) -> None:
        wait_until(
            lambda: http_get(self.ns, "127.0.0.1", port, path)[0] == 200,
            f"{name} to be ready",
            timeout=60.0,
            alive=lambda: self.lab.process_alive(name),
        )

    def _write_configs(self) -> None:
        s = self.settings
        targets = {"icmp": ADDR.cad_server, "tcp_connect": f"{ADDR.cad_server}:{CAD_PORT}"}
        jobs = "".join(
            f"""  - job_name: cad_{module}
    metrics_path: /probe
    params: {{module: [{module}]}}
    static_configs: [{{targets: ["{targets[module]}"]}}]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: instance}}
      - {{target_label: __address__, replacement: "127.0.0.1:{BLACKBOX_PORT}"}}
"""
            for module in s.modules
        )
        Path(self.paths["blackbox.yml"]).write_text(BLACKBOX_YML)
        Path(self.paths["prometheus.yml"]).write_text(
            f"""global:
  scrape_interval: {s.scrape_interval:g}s
  scrape_timeout: {s.scrape_interval:g}s
  evaluation_interval: {s.evaluation_interval:g}s
rule_files: ["{self.paths["rules.yml"]}"]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{ALERTMANAGER_PORT}"]}}]}}]
scrape_configs:
{jobs}"""
        )
        Path(self.paths["rules.yml"]).write_text(
            f"""groups:
  - name: blackbox
    rules:
      - alert: {PROBE_RULE}
        expr: probe_success == 0
        for: {s.rule_for:g}s
        labels: {{severity: critical}}
        annotations:
          summary: "Probe failed (instance {{{{ $labels.instance }}}})"
"""
        )
        Path(self.paths["alertmanager.yml"]).write_text(
            f"""route:
  receiver: supervisors
  group_by: [alertname]
  group_wait: {s.group_wait:g}s
  group_interval: {s.group_interval:g}s
  repeat_interval: 4h
receivers:
  - name: supervisors
    webhook_configs:
      - url: "{self.receiver.url(self.ns)}"
        send_resolved: true
"""
        )

    def probes_up(self) -> bool:
        """Every probe scraped and succeeding (the baseline before a scenario)."""
        data = http_json(self.ns, "127.0.0.1", PROMETHEUS_PORT, "/api/v1/query?query=probe_success")
        if not isinstance(data, dict):
            return False
        results = data.get("data", {}).get("result", [])
        return len(results) == len(self.settings.modules) and all(r["value"][1] == "1" for r in results)

    def firing(self) -> list[str]:
        """Instances whose alert Prometheus holds firing now (sent to Alertmanager, not yet paged)."""
        data = http_json(self.ns, "127.0.0.1", PROMETHEUS_PORT, "/api/v1/alerts")
        if not isinstance(data, dict):
            return []
        alerts = data.get("data", {}).get("alerts", [])
        return [a["labels"].get("instance", "") for a in alerts if a.get("state") == "firing"]

    def close(self) -> None:
        self.stop_alerting()
        self.lab.stop_process("blackbox")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- small shared helpers -----------------------------------------------------------------------


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``condition`` until it is true; raise ``LabError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise LabError(f"gave up waiting for {what}: the process exited")
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


CHAIN = ("power", "link", "router", "internet", "vpn", "agency", "dns", "cad")  # the agent's layer chain


def on_battery(lab: Lab, battery_ratio: float = 0.12, secs_left: float = 600.0) -> None:
    """Mains power gone from now on, with the battery nearly empty."""
    reading = {"on_ac": False, "battery_ratio": battery_ratio, "secs_left": secs_left}
    fixtures.write(lab.fixture_path, [{"ts_ms": int(time.time() * 1000), "power": reading}], append=True)


# How the lab breaks each layer of the agent's chain (and the backup path).
BREAKS: dict[str, Callable[[Lab], None]] = {
    "power": on_battery,
    "link": lambda lab: impair.apply(lab, impair.make("cable-pull", "primary")),
    "router": lambda lab: impair.apply(lab, impair.make("blackhole", "primary")),  # hung, carrier up
    "internet": lambda lab: impair.apply(lab, impair.make("blackhole", "broadband")),
    "vpn": lambda lab: impair.apply(lab, impair.make("vpn-block", "hub")),
    "agency": lambda lab: impair.apply(lab, impair.make("blackhole", "agency")),
    "dns": lambda lab: impair.apply(lab, impair.make("dns-fail", mode="stop")),
    "cad": lambda lab: impair.apply(lab, impair.make("cad-down")),
    "backup": lambda lab: impair.apply(lab, impair.make("blackhole", "cellular")),
}


def verdict_problems(assessment: dict[str, Any], layer: str, words: str) -> list[str]:
    """Why an assessment does not name ``layer`` (in ``words``) and no other; empty when it does.

    The verdict is the layer and starts with its words; every layer before it on the way to CAD
    is ok (nothing upstream is blamed or hidden); the untouched backup path is ok.
    """
    out = []
    if assessment.get("verdict_layer") != layer:
        out.append(f"verdict layer {assessment.get('verdict_layer')!r}, expected {layer!r}")
    if not str(assessment.get("verdict", "")).startswith(words):
        out.append(f"verdict {assessment.get('verdict')!r} does not start with {words!r}")
    states = {s["layer"]: s["state"] for s in assessment.get("layers", [])}
    for name in (*CHAIN[: CHAIN.index(layer)], "backup"):
        if states.get(name) != "ok":
            out.append(f"{name} is {states.get(name)!r}, expected ok")
    return out


def healthy_fixtures(lab: Lab) -> None:
    """Wi-Fi, hotspot modem and power readings of a healthy home, from now on."""
    fixtures.write(lab.fixture_path, [{"ts_ms": int(time.time() * 1000), **fixtures.HEALTHY}])


def cad_losses(lab: Lab, since: float = 0.0) -> list[float]:
    """Wall times at which the CAD simulator declared CAD lost (its ground truth)."""
    return [float(e["ts"]) for e in lab.cad_events() if e.get("event") == "lost" and float(e["ts"]) >= since]
