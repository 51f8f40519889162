"""The CAD session simulator: DNS and heartbeat protocol on loopback, lost/restored in the lab."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeline_lab import cadsim, impair
from lifeline_lab.layout import ADDR, CAD_NAME
from lifeline_lab.topology import Lab

pytestmark = pytest.mark.lab


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def names(path: Path) -> list[str]:
    return [e["event"] for e in events(path) if e["event"] in ("connected", "lost", "restored")]


# -- DNS, pure ---------------------------------------------------------------------------------


def test_dns_answers_a_known_name_and_nxdomain_otherwise() -> None:
    records = {"cad.agency.example": "10.20.0.10"}
    reply = cadsim.dns_answer(cadsim.build_query("CAD.agency.example", 0x1234), records)
    assert reply is not None
    qid, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    assert (qid, flags & 0x000F, qd, an) == (0x1234, 0, 1, 1)
    assert reply.endswith(socket.inet_aton("10.20.0.10"))
    missing = cadsim.dns_answer(cadsim.build_query("other.example", 7), records)
    assert missing is not None
    assert missing[3] & 0x0F == 3
    aaaa = cadsim.build_query("cad.agency.example", 9)[:-4] + struct.pack("!HH", 28, 1)
    empty = cadsim.dns_answer(aaaa, records)
    assert empty is not None
    assert struct.unpack("!H", empty[6:8])[0] == 0
    assert cadsim.dns_answer(b"\x00\x01", records) is None  # garbage is dropped


# -- real processes on loopback ----------------------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)


def start(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "lifeline_lab.cadsim", *args], stdout=subprocess.DEVNULL)
    procs.append(proc)
    return proc


@pytest.mark.system
def test_resolve_through_the_dns_server(procs: list[subprocess.Popen[bytes]]) -> None:
    port = free_port(socket.SOCK_DGRAM)
    start(procs, "dns", "--bind", "127.0.0.1", "--port", str(port), "--record", f"{CAD_NAME}=10.20.0.10")

    def answers() -> bool:
        try:
            return cadsim.resolve(CAD_NAME, "127.0.0.1", 0.2, port) == "10.20.0.10"
        except OSError:
            return False

    wait_for(answers, 10, "the DNS server")
    with pytest.raises(OSError, match="rcode 3"):
        cadsim.resolve("nothing.example", "127.0.0.1", 1.0, port)


@pytest.mark.system
def test_client_declares_lost_and_restored(procs: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    log = tmp_path / "client.jsonl"
    server = start(procs, "server", "--bind", "127.0.0.1", "--port", str(port))
    start(procs, "client", "--server", "127.0.0.1", "--port", str(port), "--interval", "0.2",
          "--lost-after", "1.0", "--backoff-min", "0.1", "--backoff-max", "0.3", "--log", str(log))  # fmt: skip
    wait_for(lambda: "connected" in names(log), 10, "the first connection")
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=5)
    wait_for(lambda: "lost" in names(log), 10, "CAD lost")
    lost = next(e for e in events(log) if e["event"] == "lost")
    assert lost["since_ack_s"] >= 1.0
    assert any(e["event"] == "connect_failed" for e in events(log))  # it kept trying
    start(procs, "server", "--bind", "127.0.0.1", "--port", str(port))
    wait_for(lambda: "restored" in names(log), 10, "CAD restored")
    assert names(log) == ["connected", "lost", "connected", "restored"]
    restored = next(e for e in events(log) if e["event"] == "restored")
    assert restored["outage_s"] > 0
    assert restored["ts"] > lost["ts"]


# -- in the lab --------------------------------------------------------------------------------


def test_cad_lost_when_the_tunnel_is_blackholed_and_restored_after(cad_lab: Lab) -> None:
    log = Path(cad_lab.cadsim_log)
    wait_for(lambda: "connected" in names(log), 10, "the CAD client to connect")
    assert "lost" not in names(log)
    impair.apply(cad_lab, impair.make("blackhole", "tunnel", "both"))
    t_cut = time.time()
    try:
        wait_for(lambda: "lost" in names(log), 15, "CAD lost")
    finally:
        impair.clear(cad_lab)
    wait_for(lambda: "restored" in names(log), 20, "CAD restored")
    lost = next(e for e in events(log) if e["event"] == "lost")
    restored = next(e for e in events(log) if e["event"] == "restored")
    assert 4.0 <= lost["ts"] - t_cut <= 7.0  # about 5 s without a heartbeat answer, as configured
    assert restored["ts"] > lost["ts"]
    assert cad_lab.status()["cadsim"]["state"] == "ok"


def test_agency_dns_failure_modes(cad_lab: Lab) -> None:
    def lookup() -> subprocess.CompletedProcess[str]:
        code = f"from lifeline_lab.cadsim import resolve; print(resolve({CAD_NAME!r}, {ADDR.dns!r}, 1.0))"
        return cad_lab.exec("laptop", [sys.executable, "-c", code], check=False)

    assert lookup().stdout.strip() == ADDR.cad_server
    impair.apply(cad_lab, impair.make("dns-fail", mode="stop"))
    assert not cad_lab.process_alive("dns-server")
    assert "ConnectionRefusedError" in lookup().stderr  # nothing listens: ICMP port unreachable
    impair.clear(cad_lab)
    assert lookup().stdout.strip() == ADDR.cad_server
    impair.apply(cad_lab, impair.make("dns-fail", mode="drop"))
    assert "TimeoutError" in lookup().stderr  # dropped on the way: silence
    impair.clear(cad_lab)
    assert lookup().stdout.strip() == ADDR.cad_server


def test_cad_down_refuses_connections(cad_lab: Lab) -> None:
    impair.apply(cad_lab, impair.make("cad-down"))
    try:
        code = f"import socket; socket.create_connection(({ADDR.cad_server!r}, 7000), 2)"
        done = cad_lab.exec("laptop", [sys.executable, "-c", code], check=False)
        assert "ConnectionRefusedError" in done.stderr
    finally:
        impair.clear(cad_lab)
    assert cad_lab.process_alive("cad-server")
