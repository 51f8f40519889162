"""What the agent costs on a laptop, side by side with prometheus-blackbox-exporter doing the same probes.

The probe set is one home position as the example config and the lab give it, on loopback: five
ICMP targets (home router, hotspot gateway, internet with a 5-echo burst 20 ms apart, VPN
concentrator, VPN headend via the hotspot) and one TCP connect to a CAD listener, each every 1 s.
``--positions N`` repeats the set N times on other 127.0.N.x addresses to make the figures larger
than the noise. blackbox_exporter sends one echo per probe, so Prometheus scrapes
``/probe?module=icmp&target=…`` once per second per echo (five jobs for the 5-echo target): both
send the same packets per second. The agent also spools a batch every 5 s and ships it to a real
collector, which blackbox has no equivalent of.

Also: the agent's start-up (process start → /metrics up → first probe result on /metrics), the
memory of the agent with every source built and read once, and the imports that dominate
``import lifeline_agent.service``.

    .venv/bin/python bench/agent_cost.py                 # 60 s windows, 1 and 10 positions
    .venv/bin/python bench/agent_cost.py --quick         # 5 s window, 1 position (smoke test)
    .venv/bin/python bench/agent_cost.py --window 120 --positions 1,10,25
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Meter,
    Proc,
    Usage,
    free_port,
    http_get,
    machine,
    mb,
    need_binary,
    register_agents,
    running,
    start_collector,
    table,
    tool,
    wait_http,
)

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
PROMETHEUS = "/usr/bin/prometheus"
AGENT_ID = "bench-agent"
HEAVY = ("scapy", "pyroute2")
SENT = "lifeline_probe_packets_sent_total{"  # echoes and connects the agent sent


@dataclass(frozen=True)
class Probe:
    name: str
    role: str
    kind: str
    host: str
    path: str
    count: int = 1
    port: int = 0

    def toml(self) -> str:
        lines = [
            "[[targets]]",
            f'name = "{self.name}"',
            f'role = "{self.role}"',
            f'kind = "{self.kind}"',
            f'host = "{self.host}"',
            f'path = "{self.path}"',
        ]
        if self.kind == "icmp":
            lines += [f"count = {self.count}", 'spacing = "20ms"', 'timeout = "500ms"']
        else:
            lines += [f"port = {self.port}", 'timeout = "1s"']
        return "\n".join(lines) + "\n"


def position(index: int, cad_port: int) -> list[Probe]:
    net = f"127.0.{index + 1}"
    return [
        Probe(f"p{index}-home-router", "router", "icmp", f"{net}.2", "primary"),
        Probe(f"p{index}-hotspot", "router", "icmp", f"{net}.3", "backup"),
        Probe(f"p{index}-internet", "internet", "icmp", f"{net}.4", "primary", count=5),
        Probe(f"p{index}-vpn", "vpn", "icmp", f"{net}.5", "tunnel"),
        Probe(f"p{index}-vpn-via-hotspot", "vpn", "icmp", f"{net}.6", "backup"),
        Probe(f"p{index}-cad", "cad", "tcp", f"{net}.7", "tunnel", port=cad_port),
    ]


class Listeners:
    """TCP listeners for the CAD targets: accept and close at once (a thread of this process)."""

    def __init__(self, hosts: Sequence[str], port: int) -> None:
        self._selector = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        for host in hosts:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
            self._socks.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._socks:
            sock.close()
        self._selector.close()


def agent_toml(
    workdir: Path, probes: Sequence[Probe], collector_url: str, token: str, metrics_port: int
) -> Path:
    path = workdir / "agent.toml"
    body = f"""[agent]
id = "{AGENT_ID}"
site = "bench"
position = "bench"
token = "{token}"
state_dir = "{workdir / "agent-state"}"
log_level = "warning"

[discovery]
default_gateways = false

[collector]
endpoints = [{{ url = "{collector_url}" }}]

[metrics]
listen = "127.0.0.1:{metrics_port}"

# Every provider on (the defaults): what a laptop runs.
[providers]
wifi = "auto"
cellular = "auto"
power = "auto"
cad_sessions = true
netlink = true
traceroute = true
desktop_notify = true

"""
    path.write_text(body + "\n".join(p.toml() for p in probes))
    return path


def blackbox_files(workdir: Path, probes: Sequence[Probe], bb_port: int) -> tuple[Path, Path]:
    bb = workdir / "blackbox.yml"
    bb.write_text(
        "modules:\n"
        "  icmp:\n    prober: icmp\n    timeout: 1s\n    icmp:\n      preferred_ip_protocol: ip4\n"
        "  tcp_connect:\n    prober: tcp\n    timeout: 1s\n    tcp:\n      preferred_ip_protocol: ip4\n"
    )
    jobs = []
    for probe in probes:
        module, target = (
            ("icmp", probe.host) if probe.kind == "icmp" else ("tcp_connect", f"{probe.host}:{probe.port}")
        )
        for echo in range(probe.count):  # one echo per blackbox probe: one job per echo of the burst
            jobs.append(
                f"  - job_name: {probe.name}-{echo}\n"
                f"    metrics_path: /probe\n"
                f"    params: {{module: [{module}], target: ['{target}']}}\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{bb_port}']}}]\n"
            )
    prom = workdir / "prometheus.yml"
    prom.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + "".join(jobs))
    return bb, prom


def page_values(metrics_url: str, prefix: str) -> list[float]:
    """Every sample on a /metrics page whose line starts with ``prefix``."""
    _, body = http_get(metrics_url)
    return [float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line.startswith(prefix)]


def counter_sum(metrics_url: str, prefix: str) -> float:
    return sum(page_values(metrics_url, prefix))


def prom_query(prom_url: str, query: str) -> float:
    status, body = http_get(f"{prom_url}/api/v1/query?query={urllib.parse.quote(query)}")
    if status != 200:
        return float("nan")
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def wait_scraping(prom_url: str, proc: Proc, timeout: float = 30.0) -> None:
    """Until Prometheus has scraped every target once (it applies discovered targets every 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = http_get(f"{prom_url}/api/v1/targets")
        if status == 200:
            active = json.loads(body)["data"]["activeTargets"]
            if active and all(t["health"] == "up" for t in active):
                return
        time.sleep(0.2)
    raise SystemExit(f"prometheus did not scrape every blackbox target within {timeout:.0f}s:\n{proc.tail()}")


@dataclass
class SideBySide:
    positions: int
    targets: int
    agent_rate: float
    bb_rate: float
    bb_success: float
    agent_success: float
    agent: Usage
    blackbox: Usage
    prometheus: Usage
    start_metrics: float
    start_first_probe: float
    rss_at_start: int


def measure(positions: int, window: float, warmup: float, profile: Path | None = None) -> SideBySide:
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-agent-") as tmp:
        workdir = Path(tmp)
        cad_port = free_port()
        probes = [p for i in range(positions) for p in position(i, cad_port)]
        listeners = Listeners([p.host for p in probes if p.kind == "tcp"], cad_port)
        try:
            db = workdir / "collector.db"
            token = register_agents(db, [AGENT_ID])[AGENT_ID]
            procs: list[Proc] = []
            with running(procs):
                collector, url = start_collector(workdir, db)
                procs.append(collector)
                bb_port, prom_port, metrics_port = free_port(), free_port(), free_port()
                bb_cfg, prom_cfg = blackbox_files(workdir, probes, bb_port)
                config = agent_toml(workdir, probes, url, token, metrics_port)
                agent = Proc("agent", [tool("lifeline-agent"), "run", "--config", str(config)], workdir)
                procs.append(agent)
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                start_metrics = wait_http(metrics_url, agent)
                start_first = wait_http(metrics_url, agent, contains=b"lifeline_probe_success{")
                rss_at_start = Meter(agent.pid).stop().rss
                blackbox = Proc(
                    "blackbox",
                    [
                        need_binary(BLACKBOX),
                        f"--config.file={bb_cfg}",
                        f"--web.listen-address=127.0.0.1:{bb_port}",
                        "--log.level=warn",
                    ],
                    workdir,
                )
                procs.append(blackbox)
                prometheus = Proc(
                    "prometheus",
                    [
                        need_binary(PROMETHEUS),
                        f"--config.file={prom_cfg}",
                        f"--storage.tsdb.path={workdir / 'prom-data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                        "--log.level=warn",
                    ],
                    workdir,
                )
                procs.append(prometheus)
                prom_url = f"http://127.0.0.1:{prom_port}"
                wait_http(f"http://127.0.0.1:{bb_port}/metrics", blackbox)
                wait_http(f"{prom_url}/-/ready", prometheus)
                wait_scraping(prom_url, prometheus)
                time.sleep(warmup)
                meters = {
                    name: Meter(p.pid) for name, p in (("a", agent), ("b", blackbox), ("p", prometheus))
                }
                for meter in meters.values():
                    meter.start()
                echoes0, t0 = counter_sum(metrics_url, SENT), time.monotonic()
                spy = None
                if profile is not None:  # py-spy samples the agent during the window (collapsed stacks)
                    spy = subprocess.Popen(
                        [
                            str(Path(sys.executable).parent / "py-spy"),
                            "record",
                            "--pid",
                            str(agent.pid),
                            "--duration",
                            str(max(1, int(window))),
                            "--format",
                            "raw",
                            "--output",
                            str(profile / f"agent-{positions}.txt"),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                time.sleep(window)
                usage = {name: meter.stop() for name, meter in meters.items()}
                if spy is not None:
                    spy.wait()
                echoes1, elapsed = counter_sum(metrics_url, SENT), time.monotonic() - t0
                span = f"{max(1, round(elapsed))}s"
                # ``up`` is written once per scrape, and each scrape is one blackbox probe.
                scrapes = prom_query(prom_url, f"sum(count_over_time(up[{span}]))")
                bb_success = prom_query(prom_url, f"avg(avg_over_time(probe_success[{span}]))")
                successes = page_values(metrics_url, "lifeline_probe_success{")
                agent_success = sum(successes) / len(successes) if successes else float("nan")
        finally:
            listeners.close()
    return SideBySide(
        positions=positions,
        targets=len(probes),
        agent_rate=(echoes1 - echoes0) / elapsed,
        bb_rate=scrapes / max(1, round(elapsed)),
        bb_success=bb_success,
        agent_success=agent_success,
        agent=usage["a"],
        blackbox=usage["b"],
        prometheus=usage["p"],
        start_metrics=start_metrics,
        start_first_probe=start_first,
        rss_at_start=rss_at_start,
    )


# --- every source, and the imports --------------------------------------------------------------

SOURCES_SCRIPT = """
import json, sys, time
t0 = time.monotonic()
import lifeline_agent.service
from lifeline_agent.config import parse
from lifeline_agent.sources import build_sources
from lifeline_agent import health
config = parse({"agent": {"id": "bench", "state_dir": sys.argv[1]}}, "(bench)")
t1 = time.monotonic()
sources = build_sources(config)
readings = {s.name: (s.available().ok, s.read().ok) for s in sources}
t2 = time.monotonic()
status = open("/proc/self/status").read()
rss = [int(l.split()[1]) * 1024 for l in status.splitlines() if l.startswith(("VmRSS", "VmHWM"))]
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("scapy", "pyroute2")})
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "rss": rss[1], "peak": rss[0],
                  "sources": readings, "heavy": heavy}))
"""


def every_source() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-src-") as tmp:
        out = subprocess.run(
            [sys.executable, "-c", SOURCES_SCRIPT, tmp],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if out.returncode != 0:
        raise SystemExit(f"building every source failed:\n{out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def import_times(
    module: str = "lifeline_agent.service", runs: int = 3
) -> tuple[list[tuple[str, float, float]], float, list[str]]:
    """Top packages as (package, self ms, cumulative ms of its outermost import), total ms, heavy modules."""
    best: dict[str, tuple[float, float]] = {}
    total = float("inf")
    heavy: list[str] = []
    for _ in range(runs):  # the fastest of a few runs: the warm-cache cost a restart pays
        out = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-c",
                f"import json, sys, {module}; print(json.dumps(list(sys.modules)))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
        heavy = sorted({m.split(".")[0] for m in loaded if m.split(".")[0] in HEAVY})
        selfs: dict[str, float] = {}
        cumulative: dict[str, float] = {}
        run_total = 0.0
        for line in out.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match is None:
                continue
            own, cum, name = int(match[1]), int(match[2]), match[4]
            package = name.split(".")[0]
            selfs[package] = selfs.get(package, 0.0) + own / 1000
            # The outermost import of a package includes all of its own: the largest cumulative.
            cumulative[package] = max(cumulative.get(package, 0.0), cum / 1000)
            if name == module:
                run_total = cum / 1000
        if run_total and run_total < total:
            total = run_total
            best = {p: (selfs[p], cumulative[p]) for p in selfs}
    rows = sorted(((p, s, c) for p, (s, c) in best.items()), key=lambda r: -r[1])
    return rows[:10], total, heavy


# --- output -----------------------------------------------------------------------------------


def cpu_text(value: float) -> str:
    return f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--window", type=float, default=60.0, help="seconds measured side by side (default 60)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default 3)")
    parser.add_argument(
        "--positions", default="1,10", help="comma-separated copies of the position probe set (default 1,10)"
    )
    parser.add_argument("--quick", action="store_true", help="5 s window, one position (smoke test)")
    parser.add_argument("--profile", default="", help="directory for py-spy collapsed stacks (agent-N.txt)")
    parser.add_argument("--skip-extras", action="store_true", help="only the side-by-side table")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.positions.split(",") if x.strip()]
    window, warmup = args.window, args.warmup
    if args.quick:
        sizes, window, warmup = [1], 5.0, 1.0

    print(f"# Agent cost — {machine()}")
    print(f"window {window:g}s per row after {warmup:g}s warm-up; CPU = % of one core (utime+stime)\n")
    rows, starts = [], []
    for size in sizes:
        profile = Path(args.profile) if args.profile else None
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
        r = measure(size, window, warmup, profile)
        ratio = r.agent.cpu_percent / r.blackbox.cpu_percent if r.blackbox.cpu_percent > 0 else float("inf")
        rows.append(
            [
                r.positions,
                r.targets,
                f"{r.agent_rate:.1f}",
                f"{r.bb_rate:.1f}",
                f"{100 * r.agent_success:.0f}/{100 * r.bb_success:.0f}",
                cpu_text(r.agent.cpu_percent),
                cpu_text(r.blackbox.cpu_percent),
                cpu_text(r.prometheus.cpu_percent),
                f"{ratio:.2f}",
                mb(r.agent.rss),
                mb(r.agent.peak),
                mb(r.blackbox.rss),
                mb(r.blackbox.peak),
                mb(r.prometheus.rss),
            ]
        )
        starts.append([r.targets, f"{r.start_metrics:.2f}", f"{r.start_first_probe:.2f}", mb(r.rss_at_start)])
    print(
        table(
            "Agent vs blackbox_exporter, same probes per second",
            [
                "positions",
                "targets",
                "agent echoes/s",
                "blackbox probes/s",
                "up % agent/bb",
                "agent CPU %",
                "blackbox CPU %",
                "prometheus CPU %",
                "CPU agent/blackbox",
                "agent RSS MB",
                "agent peak MB",
                "blackbox RSS MB",
                "blackbox peak MB",
                "prometheus RSS MB",
            ],
            rows,
        )
    )
    print(
        table(
            "Agent start-up (every provider enabled in [providers])",
            ["targets", "process start → /metrics up s", "→ first probe on /metrics s", "RSS then MB"],
            starts,
        )
    )
    if args.skip_extras:
        return 0
    src = every_source()
    sources = src["sources"]
    assert isinstance(sources, dict)
    print(
        table(
            "Every source built and read once (import + build_sources + read)",
            [
                "import s",
                "build+read s",
                "RSS MB",
                "peak MB",
                "sources (available/read ok)",
                "heavy modules loaded",
            ],
            [
                [
                    f"{float(str(src['import_s'])):.2f}",
                    f"{float(str(src['read_s'])):.2f}",
                    mb(float(str(src["rss"]))),
                    mb(float(str(src["peak"]))),
                    " ".join(f"{k}:{int(a)}/{int(o)}" for k, (a, o) in sources.items()),
                    ", ".join(src["heavy"]) if src["heavy"] else "none",  # type: ignore[arg-type]
                ]
            ],
        )
    )
    top, total, heavy = import_times()
    print(
        table(
            f"`import lifeline_agent.service`: {total:.0f} ms; top packages by own import time",
            ["package", "self ms", "cumulative ms (outermost)"],
            [[p, f"{s:.1f}", f"{c:.1f}"] for p, s, c in top],
        )
    )
    loaded = ", ".join(heavy) if heavy else "none (scapy, pyroute2 are lazy)"
    print(f"heavy modules loaded by the import: {loaded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
