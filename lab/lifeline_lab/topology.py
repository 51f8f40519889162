"""The lab as a running thing: namespaces, their processes, the CAD simulator, up and down.

``layout`` says what the home and the agency look like (roles, addresses, links); ``wireguard``
brings the tunnel up; ``state`` keeps the state file. Every veth is created directly inside its
two namespaces, so interface names repeat across namespaces and several labs (name prefixes) run
side by side.

A ``Lab`` is a context manager. ``Lab.attach(prefix)`` rebuilds the object of a lab another shell
brought up, from its state file, so ``status``, ``impair``, ``run`` and ``down`` work anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifeline_lab import procs, state, wireguard
from lifeline_lab.errors import LabError, LabStateError
from lifeline_lab.layout import (
    ADDR,
    CAD_NAME,
    CAD_PORT,
    LOAD_PORT,
    ROLES,
    VETHS,
    VPN_VARIANTS,
    Link,
    LinkEnd,
    base_routes,
    setup_script,
    veth_links,
)
from lifeline_lab.state import DEFAULT_STATE_DIR

DEFAULT_PREFIX = "ll-"
PREFIX_PATTERN = r"[a-z][a-z0-9]{0,9}-?"


def validate_prefix(prefix: str) -> str:
    if not re.fullmatch(PREFIX_PATTERN, prefix):
        raise LabStateError(
            f"prefix {prefix!r}: must match {PREFIX_PATTERN} (a letter, up to 9 letters or digits, "
            "an optional trailing '-')"
        )
    return prefix


class Lab:
    """One home-network lab. Use as ``with Lab(prefix="t1-") as lab: ...``."""

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        vpn: str = "client",
        *,
        state_dir: str = DEFAULT_STATE_DIR,
        cadsim: bool = True,
        keepalive: int = 5,
        detach: bool = False,
    ) -> None:
        if vpn not in VPN_VARIANTS:
            raise LabStateError(f"vpn: must be one of {', '.join(VPN_VARIANTS)} (got {vpn!r})")
        self.prefix = validate_prefix(prefix)
        self.core = prefix.rstrip("-")
        self.vpn = vpn
        self.state_dir = state_dir
        self.cadsim = cadsim
        self.keepalive = keepalive
        self.detach = detach
        self.addr = ADDR
        self.namespaces = {role: f"{prefix}{role}" for role in ROLES}
        self.wg_client_if = f"wg-{self.core}"
        self.wg_hub_if = f"wh-{self.core}"
        self.wg_host = "laptop" if vpn == "client" else "homerouter"
        self.workdir = os.path.join(state_dir, self.core)
        self.state_path = os.path.join(state_dir, f"{self.core}.json")
        self.lock_path = os.path.join(state_dir, f"{self.core}.lock")
        self.fixture_path = os.path.join(self.workdir, "fixtures.jsonl")
        self.cadsim_log = os.path.join(self.workdir, "cadsim-client.jsonl")
        self.procs: dict[str, procs.ProcRecord] = {}
        self._popens: dict[str, subprocess.Popen[bytes]] = {}
        self.impairments: list[dict[str, Any]] = []
        self.wg_public_keys: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.created = 0.0
        self._is_up = False

    # -- names ---------------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        """The namespace for a role (``"laptop"``) or a full namespace name; "" is the root."""
        if name in self.namespaces:
            return self.namespaces[name]
        if name == "" or name in self.namespaces.values():
            return name
        raise LabError(f"unknown namespace {name!r} (roles: {', '.join(ROLES)})")

    def links(self) -> dict[str, Link]:
        out = veth_links()
        out["tunnel"] = Link(
            "tunnel",
            LinkEnd(self.wg_host, self.wg_client_if),
            LinkEnd("vpnhub", self.wg_hub_if),
            f"WireGuard tunnel {self.wg_host} ⇄ VPN concentrator",
        )
        return out

    def link(self, name: str) -> Link:
        links = self.links()
        if name not in links:
            raise LabError(f"unknown link {name!r} (links: {', '.join(links)})")
        return links[name]

    # -- running things ------------------------------------------------------------------------

    def exec(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside a namespace (role or name)."""
        return procs.run(self.ns(ns), argv, input=input, check=check, timeout=timeout)

    def popen(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in a namespace; the lab ends it on teardown."""
        if name is None:
            name = f"{Path(argv[0]).name}-{len(self.procs)}"
        if name in self.procs and procs.is_alive(self.procs[name]):
            raise LabStateError(f"a process named {name!r} already runs in this lab")
        os.makedirs(self.workdir, exist_ok=True)
        log = os.path.join(self.workdir, f"{name}.log")
        popen, rec = procs.spawn(name, self.ns(ns), argv, log, env=env, detach=self.detach)
        self.procs[name] = rec
        self._popens[name] = popen
        self.save()
        return popen

    def python(self, ns: str, module: str, args: Sequence[str], *, name: str) -> subprocess.Popen[bytes]:
        """Start ``python -m module args`` (this interpreter) in a namespace, owned by the lab."""
        return self.popen(ns, [sys.executable, "-m", module, *args], name=name)

    def stop_process(self, name: str) -> None:
        rec = self.procs.pop(name, None)
        if rec is None:
            return
        procs.stop(rec, self._popens.pop(name, None))
        self.save()

    def process_alive(self, name: str) -> bool:
        rec = self.procs.get(name)
        return rec is not None and procs.is_alive(rec)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        if not self._is_up:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Lab:
        """Build the namespaces, links, routes, NAT, WireGuard and (optionally) the CAD simulator."""
        if os.path.exists(self.state_path):
            raise LabStateError(
                f"a lab with prefix {self.prefix!r} is already up (state {self.state_path}); "
                f"run `lifeline-lab down --prefix {self.prefix}` first"
            )
        existing = set(list_namespaces())
        clash = sorted(existing & set(self.namespaces.values()))
        if clash:
            raise LabStateError(
                f"namespaces already exist: {', '.join(clash)} (another lab with this prefix?)"
            )
        os.makedirs(self.workdir, exist_ok=True)
        self.created = time.time()
        self._is_up = True
        try:
            t0 = time.perf_counter()
            self._build()
            t1 = time.perf_counter()
            self.timings["build_s"] = t1 - t0
            wireguard.bring_up(self)
            t2 = time.perf_counter()
            self.timings["wireguard_s"] = t2 - t1
            if self.cadsim:
                self.start_cad_server()
                self.start_dns_server()
                self.start_cad_client()
            self.save()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process the lab started (by PID), delete its namespaces and files."""
        t0 = time.perf_counter()
        records = list(self.procs.values())
        for rec in records:
            popen = self._popens.get(rec.name)
            if (popen is None or popen.poll() is None) and procs.is_alive(rec):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, 15)
        for rec in records:
            procs.stop(rec, self._popens.get(rec.name))
        self.procs.clear()
        self._popens.clear()
        present = set(list_namespaces())
        batch = "".join(f"netns delete {name}\n" for name in self.namespaces.values() if name in present)
        if batch:
            procs.run("", [procs.IP, "-force", "-batch", "-"], input=batch, check=False)
        for ifname in (self.wg_client_if, self.wg_hub_if):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(wireguard.WG_SOCKET_DIR, f"{ifname}.sock"))
        for path in (self.state_path, self.lock_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if os.path.isdir(self.workdir):
            for entry in os.listdir(self.workdir):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.workdir, entry))
            with contextlib.suppress(OSError):
                os.rmdir(self.workdir)
        self.impairments.clear()
        self._is_up = False
        self.timings["teardown_s"] = time.perf_counter() - t0

    # -- building ------------------------------------------------------------------------------

    def _build(self) -> None:
        root = "".join(f"netns add {name}\n" for name in self.namespaces.values())
        for _link, nr, nif, _na, fr, fif, _fa, _d in VETHS:
            root += f"link add {nif} netns {self.ns(nr)} type veth peer name {fif} netns {self.ns(fr)}\n"
        procs.run("", [procs.IP, "-batch", "-"], input=root)
        jobs: list[tuple[str, Sequence[str], str | None]] = []
        for role in ROLES:
            jobs.append((self.ns(role), ["sh", "-c", setup_script(role)], None))
        procs.run_many(jobs)

    def routes(self, role: str) -> list[str]:
        """Every route the lab installs in a namespace, in ``ip route replace`` syntax."""
        out = base_routes(role)
        if role == self.wg_host:
            out.append(f"{ADDR.cad_subnet} dev {self.wg_client_if} src {ADDR.tunnel_client}")
        if role == "vpnhub" and self.vpn == "router":
            out.append(f"{ADDR.lan_subnet} dev {self.wg_hub_if}")
        return out

    def restore_routes(self, role: str) -> None:
        """Re-install routes the kernel removed when an interface went admin-down."""
        batch = "".join(f"route replace {r}\n" for r in self.routes(role))
        if batch:
            self.exec(role, [procs.IP, "-force", "-batch", "-"], input=batch, check=False)

    # -- CAD simulator -------------------------------------------------------------------------

    def start_cad_server(self) -> None:
        args = ["server", "--bind", ADDR.cad_server, "--port", str(CAD_PORT)]
        self.python("cad", "lifeline_lab.cadsim", args, name="cad-server")
        self._wait_listening("cad", ADDR.cad_server, CAD_PORT, "tcp", "cad-server")

    def start_dns_server(self) -> None:
        args = ["dns", "--bind", ADDR.dns, "--port", "53", "--record", f"{CAD_NAME}={ADDR.cad_server}"]
        self.python("cad", "lifeline_lab.cadsim", args, name="dns-server")
        self._wait_listening("cad", ADDR.dns, 53, "udp", "dns-server")

    def start_cad_client(self, interval: float = 1.0, lost_after: float = 5.0) -> None:
        args = [
            "client", "--server", CAD_NAME, "--dns", ADDR.dns, "--port", str(CAD_PORT),
            "--interval", str(interval), "--lost-after", str(lost_after), "--log", self.cadsim_log,
        ]  # fmt: skip
        self.python("laptop", "lifeline_lab.cadsim", args, name="cad-client")

    def _wait_listening(self, ns: str, addr: str, port: int, proto: str, name: str) -> None:
        flag = "-tln" if proto == "tcp" else "-uln"
        deadline = time.monotonic() + 10.0
        while True:
            out = self.exec(ns, ["ss", flag, "-H", f"src {addr}:{port}"]).stdout
            if out.strip():
                return
            if not self.process_alive(name):
                raise LabError(f"{name} exited at start; see {self.procs[name].log}")
            if time.monotonic() > deadline:
                raise LabError(f"{name} is not listening on {addr}:{port} after 10s")
            time.sleep(0.02)

    def start_upload(self, seconds: float, name: str = "upload") -> subprocess.Popen[bytes]:
        """A bulk TCP upload from the laptop to a sink on the internet (for bufferbloat)."""
        if not self.process_alive("load-sink"):
            self.stop_process("load-sink")
            args = ["sink", "--bind", ADDR.internet, "--port", str(LOAD_PORT)]
            self.python("isp", "lifeline_lab.load", args, name="load-sink")
            self._wait_listening("isp", ADDR.internet, LOAD_PORT, "tcp", "load-sink")
        if name in self.procs and not self.process_alive(name):
            self.stop_process(name)
        args = ["send", "--to", f"{ADDR.internet}:{LOAD_PORT}", "--seconds", f"{seconds:g}"]
        return self.python("laptop", "lifeline_lab.load", args, name=name)

    def cad_events(self) -> list[dict[str, Any]]:
        """Every JSON line the CAD client logged so far."""
        return read_jsonl(self.cadsim_log)

    # -- state ---------------------------------------------------------------------------------

    def save(self) -> None:
        if self._is_up:
            state.write(self)

    @classmethod
    def attach(cls, prefix: str = DEFAULT_PREFIX, state_dir: str = DEFAULT_STATE_DIR) -> Lab:
        """The lab another process brought up, from its state file."""
        core = validate_prefix(prefix).rstrip("-")
        data = state.read(os.path.join(state_dir, f"{core}.json"), prefix)
        lab = cls(
            str(data["prefix"]),
            str(data["vpn"]),
            state_dir=state_dir,
            cadsim=bool(data.get("cadsim", True)),
            keepalive=int(data.get("keepalive", 5)),
            detach=True,
        )
        lab.procs = {name: procs.ProcRecord.from_json(rec) for name, rec in data.get("procs", {}).items()}
        lab.impairments = list(data.get("impairments", []))
        lab.wg_public_keys = dict(data.get("wg", {}).get("public_keys", {}))
        lab.timings = dict(data.get("timings", {}))
        lab.created = float(data.get("created", 0.0))
        lab._is_up = True
        return lab

    def reload(self) -> None:
        """Re-read impairments and processes another shell may have changed."""
        fresh = Lab.attach(self.prefix, self.state_dir)
        self.impairments = fresh.impairments
        for name, rec in fresh.procs.items():
            if name not in self.procs or self.procs[name] != rec:
                self.procs[name] = rec
                self._popens.pop(name, None)
        for name in list(self.procs):
            if name not in fresh.procs:
                self.procs.pop(name)
                self._popens.pop(name, None)

    def status(self) -> dict[str, Any]:
        """What a trainer wants to see: namespaces, links, impairments, tunnel, CAD simulator."""
        present = set(list_namespaces())
        links: dict[str, Any] = {}
        for link in self.links().values():
            links[link.name] = {
                "near": f"{link.near.role}/{link.near.ifname}",
                "far": f"{link.far.role}/{link.far.ifname}",
                "near_state": self.link_state(link.near),
                "far_state": self.link_state(link.far),
            }
        events = self.cad_events()
        cad_state = "unknown"
        for event in events:
            if event.get("event") in ("lost", "restored", "connected"):
                cad_state = "lost" if event["event"] == "lost" else "ok"
        return {
            "prefix": self.prefix,
            "vpn": self.vpn,
            "namespaces": {role: (name, name in present) for role, name in self.namespaces.items()},
            "links": links,
            "impairments": self.impairments,
            "tunnel": wireguard.status(self),
            "processes": {name: procs.is_alive(rec) for name, rec in self.procs.items()},
            "cadsim": {"state": cad_state, "last": events[-1] if events else None, "log": self.cadsim_log},
            "timings": self.timings,
        }

    def link_state(self, end: LinkEnd) -> str:
        """``UP``, ``DOWN`` (admin) or ``NO-CARRIER`` (the far side is down) for one link end."""
        done = self.exec(end.role, [procs.IP, "-o", "link", "show", "dev", end.ifname], check=False)
        if done.returncode != 0:
            return "absent"
        flags = done.stdout.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in done.stdout else []
        if "UP" not in flags:
            return "DOWN"
        if "NO-CARRIER" in flags:
            return "NO-CARRIER"
        return "UP"


def list_namespaces() -> list[str]:
    done = subprocess.run([procs.IP, "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def read_jsonl(path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(item, dict):
                    out.append(item)
    except FileNotFoundError:
        pass
    return out
