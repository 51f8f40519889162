"""The conventional monitoring stack: blackbox_exporter, Prometheus and Alertmanager, in the lab.

It runs beside the agent in the laptop namespace: its scrapes and its webhook never cross a lab
impairment, which is its best case (at an agency, Prometheus would scrape the exporter through the
same VPN it is watching).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lifeline_lab.layout import ADDR, CAD_PORT
from lifeline_lab.netns import http_get, http_json
from lifeline_lab.procs import wait_until
from lifeline_lab.topology import Lab
from lifeline_lab.webhook import WebhookReceiver

BLACKBOX = "prometheus-blackbox-exporter"
PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
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
