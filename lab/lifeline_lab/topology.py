"""The dispatcher's home, its two uplinks, the internet, the agency VPN and CAD — in namespaces.

::

    laptop ─eth0 (primary)─ homerouter (NAT) ─wan0 (broadband)─┐
      │                                                       isp ─hub0 (hub)─ vpnhub ─lan0 (agency)─ cad
      └─usb0 (backup)─ hotspot (NAT, 100.64/10) ─wan0 (cellular)┘      203.0.113.10     10.20.0.10 CAD :7000
                                                                                         10.20.0.53 DNS :53
    client VPN: WireGuard laptop ⇄ vpnhub          router VPN: WireGuard homerouter ⇄ vpnhub

Every veth is created directly inside its two namespaces, so interface names repeat across
namespaces and several labs (name prefixes) run side by side. The CAD subnet is routed only
through the tunnel; the ISP has no route to it and the VPN hub refuses to forward from its public
side to the agency LAN.

A ``Lab`` is a context manager. ``Lab.attach(prefix)`` rebuilds the object of a lab another shell
brought up, from its state file, so ``status``, ``impair``, ``run`` and ``down`` work anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeline_lab import procs
from lifeline_lab.errors import CommandFailed, LabError, LabStateError

DEFAULT_PREFIX = "ll-"
DEFAULT_STATE_DIR = "/run/lifeline-lab"
PREFIX_PATTERN = r"[a-z][a-z0-9]{0,9}-?"
ROLES = ("laptop", "homerouter", "hotspot", "isp", "vpnhub", "cad")
VPN_VARIANTS = ("client", "router")
WG_PORT = 51820
CAD_PORT = 7000
CAD_NAME = "cad.agency.example"
LOAD_PORT = 9000
WG_SOCKET_DIR = "/var/run/wireguard"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Addresses:
    """Every address in the lab. The same in every lab: the namespaces keep them apart."""

    laptop_primary: str = "192.168.1.100"
    router: str = "192.168.1.1"
    laptop_backup: str = "192.168.42.100"
    hotspot: str = "192.168.42.1"
    router_wan: str = "198.51.100.2"
    isp_broadband: str = "198.51.100.1"
    hotspot_wan: str = "100.64.0.2"  # carrier-grade NAT range (RFC 6598)
    isp_cellular: str = "100.64.0.1"
    isp_hub: str = "203.0.113.1"
    vpnhub_public: str = "203.0.113.10"
    internet: str = "192.0.2.1"  # a public host on the ISP (internet reachability probes, load sink)
    vpnhub_lan: str = "10.20.0.1"
    cad_server: str = "10.20.0.10"
    dns: str = "10.20.0.53"
    cad_subnet: str = "10.20.0.0/24"
    tunnel_hub: str = "10.99.0.1"
    tunnel_client: str = "10.99.0.2"
    tunnel_subnet: str = "10.99.0.0/24"
    lan_subnet: str = "192.168.1.0/24"


ADDR = Addresses()


@dataclass(frozen=True, slots=True)
class LinkEnd:
    role: str
    ifname: str


@dataclass(frozen=True, slots=True)
class Link:
    """A point-to-point link. ``near`` is the end closer to the laptop: traffic "up" goes near → far."""

    name: str
    near: LinkEnd
    far: LinkEnd
    description: str


# (link, near role, near if, near address, far role, far if, far address, description)
_VETHS: tuple[tuple[str, str, str, str, str, str, str, str], ...] = (
    ("primary", "laptop", "eth0", "192.168.1.100/24", "homerouter", "lan0", "192.168.1.1/24",
     "laptop ⇄ home router (home LAN / Wi-Fi)"),
    ("backup", "laptop", "usb0", "192.168.42.100/24", "hotspot", "lan0", "192.168.42.1/24",
     "laptop ⇄ cellular hotspot (USB tether)"),
    ("broadband", "homerouter", "wan0", "198.51.100.2/24", "isp", "bb0", "198.51.100.1/24",
     "home router ⇄ ISP (home broadband)"),
    ("cellular", "hotspot", "wan0", "100.64.0.2/10", "isp", "cg0", "100.64.0.1/10",
     "hotspot ⇄ ISP (LTE, carrier-grade NAT range)"),
    ("hub", "isp", "hub0", "203.0.113.1/24", "vpnhub", "wan0", "203.0.113.10/24",
     "internet ⇄ agency VPN concentrator"),
    ("agency", "vpnhub", "lan0", "10.20.0.1/24", "cad", "eth0", "10.20.0.10/24",
     "VPN concentrator ⇄ agency LAN (CAD, DNS)"),
)  # fmt: skip

_FORWARDERS = ("homerouter", "hotspot", "isp", "vpnhub")
_NAT = """table ip lifeline_nat {
  chain lab_post { type nat hook postrouting priority srcnat; policy accept; oifname "wan0" masquerade; }
}
"""
_HUB_FILTER = """table inet lifeline_fw {
  chain lab_forward {
    type filter hook forward priority 0; policy accept; iifname "wan0" oifname "lan0" drop;
  }
}
"""


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
        out = {
            name: Link(name, LinkEnd(nr, nif), LinkEnd(fr, fif), desc)
            for name, nr, nif, _na, fr, fif, _fa, desc in _VETHS
        }
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
            self._wireguard()
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
                os.unlink(os.path.join(WG_SOCKET_DIR, f"{ifname}.sock"))
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
        for _link, nr, nif, _na, fr, fif, _fa, _d in _VETHS:
            root += f"link add {nif} netns {self.ns(nr)} type veth peer name {fif} netns {self.ns(fr)}\n"
        procs.run("", [procs.IP, "-batch", "-"], input=root)
        jobs: list[tuple[str, Sequence[str], str | None]] = []
        for role in ROLES:
            jobs.append((self.ns(role), ["sh", "-c", self._setup_script(role)], None))
        procs.run_many(jobs)

    def _setup_script(self, role: str) -> str:
        lines = ["link set lo up"]
        for _link, nr, nif, na, fr, fif, fa, _d in _VETHS:
            if nr == role:
                lines += [f"addr add {na} dev {nif}", f"link set {nif} up"]
            if fr == role:
                lines += [f"addr add {fa} dev {fif}", f"link set {fif} up"]
        if role == "cad":
            lines.append(f"addr add {ADDR.dns}/24 dev eth0")
        if role == "isp":
            lines.append(f"addr add {ADDR.internet}/32 dev lo")
        lines += [f"route replace {r}" for r in self._base_routes(role)]
        sysctls = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
        if role in _FORWARDERS:
            sysctls.append("net.ipv4.ip_forward=1")
        if role == "laptop":
            sysctls.append("net.ipv4.ping_group_range=0 2147483647")
        script = "set -e\nip -batch - <<'EOF_IP'\n" + "\n".join(lines) + "\nEOF_IP\n"
        script += "".join(f"sysctl -qw '{s}'\n" for s in sysctls)
        nft = ""
        if role in ("homerouter", "hotspot"):
            nft += _NAT
        if role == "vpnhub":
            nft += _HUB_FILTER
        if nft:
            script += f"nft -f - <<'EOF_NFT'\n{nft}EOF_NFT\n"
        return script

    def _base_routes(self, role: str) -> list[str]:
        if role == "laptop":
            return [
                f"default via {ADDR.router} dev eth0 metric 100",
                f"default via {ADDR.hotspot} dev usb0 metric 600",
            ]
        if role == "homerouter":
            return [f"default via {ADDR.isp_broadband} dev wan0"]
        if role == "hotspot":
            return [f"default via {ADDR.isp_cellular} dev wan0"]
        if role == "vpnhub":
            return [f"default via {ADDR.isp_hub} dev wan0"]
        if role == "cad":
            return [f"default via {ADDR.vpnhub_lan} dev eth0"]
        return []

    def routes(self, role: str) -> list[str]:
        """Every route the lab installs in a namespace, in ``ip route replace`` syntax."""
        out = self._base_routes(role)
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

    def _wireguard(self) -> None:
        keys = [subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
                for _ in range(2)]  # fmt: skip
        pubs = [
            subprocess.run(
                ["wg", "pubkey"], input=k, capture_output=True, text=True, check=True
            ).stdout.strip()
            for k in keys
        ]
        client_key, hub_key = keys
        self.wg_public_keys = {"client": pubs[0], "hub": pubs[1]}
        env = {"LOG_LEVEL": "error"}
        self.popen(self.wg_host, ["wireguard-go", "-f", self.wg_client_if], name="wireguard-client", env=env)
        self.popen("vpnhub", ["wireguard-go", "-f", self.wg_hub_if], name="wireguard-hub", env=env)
        for ifname, name in ((self.wg_client_if, "wireguard-client"), (self.wg_hub_if, "wireguard-hub")):
            self._wait_socket(ifname, name)
        hub_allowed = f"{ADDR.tunnel_client}/32"
        if self.vpn == "router":
            hub_allowed += f",{ADDR.lan_subnet}"
        hub_script = (
            f"set -e\nwg set {self.wg_hub_if} private-key /dev/stdin listen-port {WG_PORT} "
            f"peer {pubs[0]} allowed-ips {hub_allowed}\n"
            f"ip addr add {ADDR.tunnel_hub}/24 dev {self.wg_hub_if}\nip link set {self.wg_hub_if} up\n"
        )
        client_script = (
            f"set -e\nwg set {self.wg_client_if} private-key /dev/stdin "
            f"peer {pubs[1]} endpoint {ADDR.vpnhub_public}:{WG_PORT} "
            f"allowed-ips {ADDR.cad_subnet},{ADDR.tunnel_subnet} persistent-keepalive {self.keepalive}\n"
            f"ip addr add {ADDR.tunnel_client}/24 dev {self.wg_client_if}\n"
            f"ip link set {self.wg_client_if} up\n"
        )
        procs.run_many(
            [
                (self.ns("vpnhub"), ["sh", "-c", hub_script], hub_key + "\n"),
                (self.ns(self.wg_host), ["sh", "-c", client_script], client_key + "\n"),
            ]
        )
        self.restore_routes(self.wg_host)
        self.restore_routes("vpnhub")
        self.wait_handshake(5.0)

    def _wait_socket(self, ifname: str, proc_name: str, timeout: float = 5.0) -> None:
        path = os.path.join(WG_SOCKET_DIR, f"{ifname}.sock")
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if not self.process_alive(proc_name):
                raise LabError(f"{proc_name} exited at start; see {self.procs[proc_name].log}")
            if time.monotonic() > deadline:
                raise LabError(f"{proc_name}: no control socket {path} after {timeout:g}s")
            time.sleep(0.005)

    def wg_status(self) -> dict[str, Any]:
        """The client end's handshake age, endpoint and byte counters (never a key)."""
        ns = self.wg_host
        out: dict[str, Any] = {"interface": self.wg_client_if, "namespace": self.ns(ns)}
        try:
            hs = self.exec(ns, ["wg", "show", self.wg_client_if, "latest-handshakes"]).stdout.split()
            ep = self.exec(ns, ["wg", "show", self.wg_client_if, "endpoints"]).stdout.split()
            tr = self.exec(ns, ["wg", "show", self.wg_client_if, "transfer"]).stdout.split()
        except CommandFailed as exc:
            out["error"] = exc.stderr
            return out
        stamp = int(hs[1]) if len(hs) > 1 else 0
        out["latest_handshake"] = stamp
        out["handshake_age_s"] = (time.time() - stamp) if stamp else None
        out["endpoint"] = ep[1] if len(ep) > 1 else ""
        out["rx_bytes"] = int(tr[1]) if len(tr) > 2 else 0
        out["tx_bytes"] = int(tr[2]) if len(tr) > 2 else 0
        return out

    def wait_handshake(self, timeout: float) -> float:
        """Wait for the first WireGuard handshake; returns seconds waited."""
        t0 = time.monotonic()
        while True:
            status = self.wg_status()
            if status.get("latest_handshake"):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise LabError(f"no WireGuard handshake within {timeout:g}s: {status}")
            time.sleep(0.01)

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

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "vpn": self.vpn,
            "state_dir": self.state_dir,
            "cadsim": self.cadsim,
            "keepalive": self.keepalive,
            "namespaces": self.namespaces,
            "wg": {
                "client_if": self.wg_client_if,
                "hub_if": self.wg_hub_if,
                "host": self.wg_host,
                "public_keys": self.wg_public_keys,
            },
            "procs": {name: rec.to_json() for name, rec in self.procs.items()},
            "impairments": self.impairments,
            "timings": self.timings,
            "created": self.created,
        }

    def save(self) -> None:
        if not self._is_up:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = f"{self.state_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
        os.replace(tmp, self.state_path)

    @classmethod
    def attach(cls, prefix: str = DEFAULT_PREFIX, state_dir: str = DEFAULT_STATE_DIR) -> Lab:
        """The lab another process brought up, from its state file."""
        core = validate_prefix(prefix).rstrip("-")
        path = os.path.join(state_dir, f"{core}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise LabStateError(
                f"no lab with prefix {prefix!r} is up (no {path}); start one with `lifeline-lab up`"
            ) from None
        except json.JSONDecodeError as exc:
            raise LabStateError(f"{path}: not a lab state file ({exc})") from None
        if data.get("version") != STATE_VERSION:
            raise LabStateError(f"{path}: state version {data.get('version')!r}, expected {STATE_VERSION}")
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

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lab's lock while changing it (one CLI command at a time)."""
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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
            "tunnel": self.wg_status(),
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


def running_labs(state_dir: str = DEFAULT_STATE_DIR) -> list[str]:
    """Prefixes of labs with a state file."""
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.endswith(".json"):
            try:
                with open(os.path.join(state_dir, name), encoding="utf-8") as handle:
                    out.append(str(json.load(handle)["prefix"]))
            except (OSError, ValueError, KeyError):
                continue
    return out
