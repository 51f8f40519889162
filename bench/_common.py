"""Shared parts of the benchmarks: kernel accounting of processes, child processes, a collector, tables.

CPU is ``utime + stime`` from ``/proc/<pid>/stat`` (summed over the process and its live
descendants), shown as % of one core over a wall-clock window. Memory is ``VmRSS`` (now) and
``VmHWM`` (peak) from ``/proc/<pid>/status``. Nothing here asserts a time: scripts print tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tool(name: str) -> str:
    """A console script of this virtualenv (``lifeline-agent``), else the PATH's."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: run `make venv` (Python) or `make apt` (Debian packages)")
    return found


def need_binary(path: str) -> str:
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} is missing: `make apt` installs the Debian packages the benchmarks use")
    return path


# --- kernel accounting ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of these processes (threads included), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def memory(pids: Iterable[int]) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes, summed over the processes."""
    rss = peak = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) * 1024
    return rss, peak


@dataclass
class Usage:
    cpu_percent: float  # of one core
    rss: int
    peak: int


class Meter:
    """CPU of a process tree over a window; call ``start`` then ``stop``."""

    def __init__(self, pid: int, tree: bool = True) -> None:
        self.pid = pid
        self.tree = tree
        self._cpu0 = 0.0
        self._t0 = 0.0

    def pids(self) -> list[int]:
        return descendants(self.pid) if self.tree else [self.pid]

    def start(self) -> None:
        self._cpu0 = cpu_seconds(self.pids())
        self._t0 = time.monotonic()

    def stop(self) -> Usage:
        pids = self.pids()
        cpu = cpu_seconds(pids) - self._cpu0
        wall = time.monotonic() - self._t0
        rss, peak = memory(pids)
        return Usage(100.0 * cpu / wall if wall > 0 else 0.0, rss, peak)


def self_cpu() -> float:
    """CPU seconds of this process (the load generator), threads included."""
    usage = os.times()
    return usage.user + usage.system


# --- processes ------------------------------------------------------------------------------------


class Proc:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        cpus: set[int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")

        def pin() -> None:  # runs in the child before exec, so every thread inherits the mask
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            preexec_fn=pin if cpus else None,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running(procs: list[Proc]) -> Iterator[list[Proc]]:
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs we built
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, proc: Proc, timeout: float = 30.0, *, contains: bytes = b"") -> float:
    """Seconds from the process start until ``url`` answers 200 (and holds ``contains``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"{proc.name} exited early:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            status, body = http_get(url, timeout=1.0)
            if status == 200 and contains in body:
                return time.monotonic() - proc.started
        time.sleep(0.01)
    raise SystemExit(f"{proc.name}: {url} not ready after {timeout:.0f}s:\n{proc.tail()}")


# --- a collector ----------------------------------------------------------------------------------


def register_agents(db_path: Path | str, ids: Sequence[str]) -> dict[str, str]:
    """Register agents straight in a store (a SQLite file or a PostgreSQL DSN); returns id → token."""
    from lifeline_collector.store import Store

    store = Store(str(db_path))
    now_ms = int(time.time() * 1000)
    try:
        return {agent: store.add_agent(agent, site="bench", position=agent, now_ms=now_ms) for agent in ids}
    finally:
        store.close()


def collector_config(workdir: Path, db_path: Path, port: int) -> Path:
    path = workdir / "collector.toml"
    path.write_text(
        f"""[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
path = "{db_path}"

[alerting]
silent_after = "30s"
"""
    )
    return path


def start_collector(workdir: Path, db_path: Path, *, cpus: set[int] | None = None) -> tuple[Proc, str]:
    port = free_port()
    config = collector_config(workdir, db_path, port)
    proc = Proc(
        "collector",
        [tool("lifeline-collector"), "serve", "--config", str(config), "--log-level", "warning"],
        workdir,
        cpus=cpus,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url


# --- output ---------------------------------------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (so it pastes into the README as it is)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [f"### {title}", "", line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out) + "\n"


def mb(value: float) -> str:
    return f"{value / 1_000_000:.1f}"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    python = sys.version.split()[0]
    return f"{today}; {os.cpu_count()} CPUs ({model}); {ram / 2**30:.1f} GiB RAM; Python {python}"
