"""Impairments: real failures on demand, applied and changed while traffic flows.

Every impairment acts on one **link** of the lab (``primary``, ``backup``, ``broadband``,
``cellular``, ``hub``, ``agency``, ``tunnel``) in one **direction**: ``up`` is traffic leaving the
laptop's side of the link (towards the agency), ``down`` the answers, ``both`` is both. Values are
per direction: ``delay 40 ms`` on ``up`` adds 40 ms to a round trip, on ``both`` 80 ms.

================  ============================================================================
kind              how it is done (no netem on this kernel)
================  ============================================================================
delay             NFQUEUE + ``delayd`` in the link's far (upstream) box: raw PREROUTING for
                  ``up``, mangle POSTROUTING for ``down`` (± uniform jitter)
burst-loss        the same daemon, Gilbert model (``percent`` average, ``burst_len`` packets)
loss              nft netdev ingress hook, ``numgen random`` per packet
blackhole         nft netdev ingress hook, every IPv4 packet dropped, link stays up
rate              tbf on the sending end's egress (``rate_kbit``, queue ``latency_ms``): real
                  bufferbloat under load, because the queue is real
cable-pull        the FAR end set down: the laptop side loses carrier, its routes stay (linkdown)
link-down         the NEAR end set admin-down: its routes are removed
vpn-block         UDP to the VPN concentrator (port 51820) dropped on the link
power-off         every interface of ``homerouter`` or ``hotspot`` down (the box lost power)
cad-down          the CAD server process stopped (connections refused)
dns-fail          the agency DNS server stopped (``mode = "stop"``) or port 53 dropped (``"drop"``)
================  ============================================================================

The active set lives in the lab's state file. Every change recomputes the wanted kernel state from
the whole set and applies only the difference, so impairments combine (delay + loss + rate on one
link) and each one clears on its own.

Over 500 lines on purpose: the kinds, the wanted kernel state and how each kind is applied are one
table read top to bottom; the daemons and the topology live elsewhere.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from lifeline_lab import procs
from lifeline_lab.errors import ImpairmentError, LabError
from lifeline_lab.layout import ADDR, ROLES
from lifeline_lab.wireguard import WG_PORT

if TYPE_CHECKING:
    from lifeline_lab.topology import Lab

LINK_KINDS = ("delay", "burst-loss", "loss", "blackhole", "rate", "cable-pull", "link-down", "vpn-block")
NODE_KINDS = ("power-off",)
SERVICE_KINDS = ("cad-down", "dns-fail")
KINDS = LINK_KINDS + NODE_KINDS + SERVICE_KINDS
DIRECTIONAL = ("delay", "burst-loss", "loss", "blackhole", "rate")
DIRECTIONS = ("up", "down", "both")
POWER_NODES = ("homerouter", "hotspot")
DNS_MODES = ("stop", "drop")
NFT_TABLE = "lifeline"
LOSS_SCALE = 100_000  # numgen modulus: percent resolution of 0.001


@dataclass(frozen=True, slots=True)
class Impairment:
    """One active impairment. ``link`` is the node for ``power-off`` and empty for services."""

    kind: str
    link: str = ""
    direction: str = "both"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    percent: float = 0.0
    burst_len: float = 0.0
    rate_kbit: float = 0.0
    latency_ms: float = 0.0
    mode: str = ""

    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.link, self.direction)

    def to_json(self) -> dict[str, Any]:
        defaults = Impairment(kind=self.kind)
        out = {k: v for k, v in asdict(self).items() if k in ("kind", "link") or v != getattr(defaults, k)}
        out["direction"] = self.direction
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Impairment:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self) -> str:
        where = f"{self.link} {self.direction}" if self.kind in DIRECTIONAL else self.link
        detail = {
            "delay": f"{self.delay_ms:g} ms" + (f" ± {self.jitter_ms:g} ms" if self.jitter_ms else ""),
            "burst-loss": f"{self.percent:g} % in bursts of {self.burst_len:g}",
            "loss": f"{self.percent:g} %",
            "rate": f"{self.rate_kbit:g} kbit/s, queue {self.latency_ms:g} ms",
            "dns-fail": self.mode,
        }.get(self.kind, "")
        return " ".join(part for part in (self.kind, where, detail) if part)


def make(kind: str, link: str = "", direction: str = "both", **params: Any) -> Impairment:
    """Build and check an impairment; every problem raises ``ImpairmentError`` naming the field."""
    if kind not in KINDS:
        raise ImpairmentError(f"kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    if direction not in DIRECTIONS:
        raise ImpairmentError(f"direction: must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    known = {f.name for f in fields(Impairment)} - {"kind", "link", "direction"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ImpairmentError(f"{kind}: unknown parameter(s) {', '.join(unknown)}")
    values = {k: v for k, v in params.items() if v is not None}
    imp = Impairment(kind=kind, link=link, direction=direction, **values)
    if kind in LINK_KINDS and not imp.link:
        imp = replace(imp, link="hub") if kind == "vpn-block" else imp
    if kind in SERVICE_KINDS:
        imp = replace(imp, link="cad" if kind == "cad-down" else "dns", direction="both")
    if kind == "dns-fail":
        imp = replace(imp, mode=imp.mode or "stop")
        if imp.mode not in DNS_MODES:
            raise ImpairmentError(f"mode: must be one of {', '.join(DNS_MODES)} (got {imp.mode!r})")
    if kind in LINK_KINDS and not imp.link:
        raise ImpairmentError(f"{kind}: link is required")
    if kind == "power-off" and imp.link not in POWER_NODES:
        raise ImpairmentError(f"power-off: node must be one of {', '.join(POWER_NODES)} (got {imp.link!r})")
    if kind not in DIRECTIONAL:
        imp = replace(imp, direction="both")
    _check_range("delay_ms", imp.delay_ms, 0.0, 10_000.0)
    _check_range("jitter_ms", imp.jitter_ms, 0.0, imp.delay_ms if kind == "delay" else 10_000.0)
    _check_range("percent", imp.percent, 0.0, 100.0)
    if kind == "delay" and imp.delay_ms <= 0:
        raise ImpairmentError("delay_ms: must be > 0 for delay")
    if kind == "burst-loss":
        imp = replace(imp, burst_len=imp.burst_len or 5.0)
        _check_range("burst_len", imp.burst_len, 1.0, 10_000.0)
    if kind == "rate":
        if imp.rate_kbit <= 0:
            raise ImpairmentError("rate_kbit: must be > 0 for rate")
        imp = replace(imp, latency_ms=imp.latency_ms or 300.0)
        _check_range("latency_ms", imp.latency_ms, 1.0, 10_000.0)
    return imp


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ImpairmentError(f"{name}: must be between {low:g} and {high:g} (got {value:g})")


def _expand(imp: Impairment) -> list[Impairment]:
    if imp.kind in DIRECTIONAL and imp.direction == "both":
        return [replace(imp, direction="up"), replace(imp, direction="down")]
    return [imp]


# -- the wanted kernel state of a set of impairments --------------------------------------------

End = tuple[str, str]  # (role, interface)
Hook = tuple[str, str, str]  # (role, interface, "in" | "out"): where a delay queue sits


@dataclass(frozen=True, slots=True)
class Wanted:
    netdev: dict[End, tuple[str, ...]]
    queues: dict[Hook, dict[str, float]]
    tbf: dict[End, tuple[float, float]]
    down: frozenset[End]
    stopped: frozenset[str]


def _ingress(lab: Lab, imp: Impairment) -> End:
    link = lab.link(imp.link)
    end = link.far if imp.direction == "up" else link.near
    return (end.role, end.ifname)


def _delay_hook(lab: Lab, imp: Impairment) -> Hook:
    """Delay is held in the far (upstream) box of a link: on the way in for ``up``, on the way out
    for ``down``. Never in the laptop itself: probes there (fping, the agent) take RTT from the
    kernel's receive stamp, which is set before a packet is queued, so a hold there is invisible."""
    far = lab.link(imp.link).far
    return (far.role, far.ifname, "in" if imp.direction == "up" else "out")


def _egress(lab: Lab, imp: Impairment) -> End:
    link = lab.link(imp.link)
    end = link.near if imp.direction == "up" else link.far
    return (end.role, end.ifname)


def wanted(lab: Lab, active: Iterable[Impairment]) -> Wanted:
    netdev: dict[End, list[str]] = {}
    queues: dict[Hook, dict[str, float]] = {}
    tbf: dict[End, tuple[float, float]] = {}
    down: set[End] = set()
    stopped: set[str] = set()
    for imp in active:
        if imp.kind == "loss":
            n = round(imp.percent / 100.0 * LOSS_SCALE)
            if n <= 0:
                continue  # 0 %: nothing to drop
            # numgen yields 0 … LOSS_SCALE-1, so "< LOSS_SCALE" is out of nft's range: 100 % is a drop.
            rule = (
                'meta protocol ip counter drop comment "loss"'
                if n >= LOSS_SCALE
                else f'meta protocol ip numgen random mod {LOSS_SCALE} < {n} counter drop comment "loss"'
            )
            netdev.setdefault(_ingress(lab, imp), []).append(rule)
        elif imp.kind == "blackhole":
            netdev.setdefault(_ingress(lab, imp), []).insert(
                0, 'meta protocol ip counter drop comment "blackhole"'
            )
        elif imp.kind == "vpn-block":
            rule = (
                f"meta protocol ip ip daddr {ADDR.vpnhub_public} udp dport {WG_PORT} "
                'counter drop comment "vpn-block"'
            )
            netdev.setdefault(_ingress(lab, replace(imp, direction="up")), []).insert(0, rule)
        elif imp.kind == "dns-fail" and imp.mode == "drop":
            for proto in ("udp", "tcp"):
                rule = (
                    f'meta protocol ip ip daddr {ADDR.dns} {proto} dport 53 counter drop comment "dns-fail"'
                )
                netdev.setdefault(("cad", "eth0"), []).insert(0, rule)
        elif imp.kind == "dns-fail":
            stopped.add("dns-server")
        elif imp.kind == "cad-down":
            stopped.add("cad-server")
        elif imp.kind in ("delay", "burst-loss"):
            cfg = queues.setdefault(_delay_hook(lab, imp), {})
            if imp.kind == "delay":
                cfg.update(delay_ms=imp.delay_ms, jitter_ms=imp.jitter_ms)
            else:
                cfg.update(burst_loss_pct=imp.percent, burst_len=imp.burst_len)
        elif imp.kind == "rate":
            tbf[_egress(lab, imp)] = (imp.rate_kbit, imp.latency_ms)
        elif imp.kind == "cable-pull":
            far = lab.link(imp.link).far
            down.add((far.role, far.ifname))
        elif imp.kind == "link-down":
            near = lab.link(imp.link).near
            down.add((near.role, near.ifname))
        elif imp.kind == "power-off":
            for link in lab.links().values():
                for side in (link.near, link.far):
                    if side.role == imp.link:
                        down.add((side.role, side.ifname))
    return Wanted({k: tuple(v) for k, v in netdev.items()}, queues, tbf, frozenset(down), frozenset(stopped))


# -- applying the difference --------------------------------------------------------------------


def _chain(ifname: str) -> str:
    return "in_" + ifname.replace("-", "_")


def _apply_netdev(lab: Lab, end: End, rules: tuple[str, ...]) -> None:
    role, ifname = end
    chain = _chain(ifname)
    script = (
        f"table netdev {NFT_TABLE} {{}}\n"
        f"add chain netdev {NFT_TABLE} {chain} "
        f'{{ type filter hook ingress device "{ifname}" priority -500; }}\n'
        f"flush chain netdev {NFT_TABLE} {chain}\n"
        f'add rule netdev {NFT_TABLE} {chain} meta protocol ip counter comment "seen"\n'
    )
    script += "".join(f"add rule netdev {NFT_TABLE} {chain} {rule}\n" for rule in rules)
    lab.exec(role, ["nft", "-f", "-"], input=script)


def _queue_num(lab: Lab, hook: Hook) -> int:
    for index, link in enumerate(lab.links().values()):
        if (link.far.role, link.far.ifname) == hook[:2]:
            return 10 + 2 * index + (0 if hook[2] == "in" else 1)
    raise LabError(f"no link end {hook[:2]}")


def _iptables(lab: Lab, action: str, hook: Hook) -> bool:
    """Divert a hook's packets to its queue. In: raw PREROUTING (before conntrack: queueing later
    on a NAT router loses packets of new flows). Out: mangle POSTROUTING, which only sees packets
    of flows conntrack has already confirmed in the lab (answers to the laptop)."""
    role, ifname, way = hook
    where = (
        ["-t", "raw", action, "PREROUTING", "-i"]
        if way == "in"
        else ["-t", "mangle", action, "POSTROUTING", "-o"]
    )
    argv = ["iptables", "-w", *where, ifname, "-j", "NFQUEUE", "--queue-num", str(_queue_num(lab, hook)),
            "--queue-bypass"]  # fmt: skip
    return lab.exec(role, argv, check=False).returncode == 0


def _control_path(lab: Lab, role: str) -> str:
    return os.path.join(lab.workdir, f"delayd-{role}.json")


def _apply_queues(lab: Lab, old: dict[Hook, dict[str, float]], new: dict[Hook, dict[str, float]]) -> None:
    roles = {end[0] for end in set(old) | set(new) if old.get(end) != new.get(end)}
    for role in sorted(roles):
        mine_new = {end: cfg for end, cfg in new.items() if end[0] == role}
        mine_old = {end: cfg for end, cfg in old.items() if end[0] == role}
        for end in set(mine_old) - set(mine_new):
            while _iptables(lab, "-D", end):
                pass
        name = f"delayd-{role}"
        if not mine_new:
            _write_control(lab, role, {})
            lab.stop_process(name)
            continue
        version = _write_control(lab, role, {str(_queue_num(lab, end)): cfg for end, cfg in mine_new.items()})
        if not lab.process_alive(name):
            lab.stop_process(name)
            lab.python(role, "lifeline_lab.delayd", ["--control", _control_path(lab, role)], name=name)
        _wait_ack(lab, role, version, name)
        for end in set(mine_new) - set(mine_old):
            if not _iptables(lab, "-C", end):
                _iptables(lab, "-A", end)


def _write_control(lab: Lab, role: str, queues: dict[str, dict[str, float]]) -> int:
    version = time.time_ns()
    path = _control_path(lab, role)
    os.makedirs(lab.workdir, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"version": version, "queues": queues}, handle)
    os.replace(tmp, path)
    return version


def _wait_ack(lab: Lab, role: str, version: int, name: str, timeout: float = 10.0) -> None:
    path = _control_path(lab, role) + ".ack"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as handle:
                if int(json.load(handle).get("version", 0)) >= version:
                    return
        except (OSError, ValueError):
            pass
        if not lab.process_alive(name):
            raise LabError(f"{name} exited; see {lab.procs[name].log if name in lab.procs else 'its log'}")
        time.sleep(0.02)
    raise LabError(f"{name} did not take the new settings within {timeout:g}s")


def _apply_tbf(lab: Lab, end: End, setting: tuple[float, float] | None) -> None:
    role, ifname = end
    if setting is None:
        lab.exec(role, ["tc", "qdisc", "del", "dev", ifname, "root"], check=False)
        return
    kbit, latency_ms = setting
    burst = max(3000, int(kbit * 1000 / 8 / 100))  # 10 ms worth of bytes, at least two packets
    lab.exec(
        role,
        ["tc", "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", f"{kbit:g}kbit",
         "burst", str(burst), "latency", f"{latency_ms:g}ms"],
    )  # fmt: skip


def _apply(lab: Lab, old: Wanted, new: Wanted) -> None:
    for end in set(old.netdev) | set(new.netdev):
        if old.netdev.get(end) != new.netdev.get(end):
            _apply_netdev(lab, end, new.netdev.get(end, ()))
    _apply_queues(lab, old.queues, new.queues)
    for end in set(old.tbf) | set(new.tbf):
        if old.tbf.get(end) != new.tbf.get(end):
            _apply_tbf(lab, end, new.tbf.get(end))
    for role, ifname in sorted(new.down - old.down):
        lab.exec(role, [procs.IP, "link", "set", ifname, "down"])
    came_up = sorted(old.down - new.down)
    for role, ifname in came_up:
        lab.exec(role, [procs.IP, "link", "set", ifname, "up"], check=False)
    if came_up:
        procs.run_many(
            [
                (
                    lab.ns(role),
                    [procs.IP, "-force", "-batch", "-"],
                    "".join(f"route replace {r}\n" for r in routes),
                )
                for role in ROLES
                if (routes := lab.routes(role))
            ]
        )
    for name in sorted(new.stopped - old.stopped):
        lab.stop_process(name)
    for name in sorted(old.stopped - new.stopped):
        if name == "cad-server":
            lab.start_cad_server()
        elif name == "dns-server":
            lab.start_dns_server()


# -- the public operations ----------------------------------------------------------------------


def active(lab: Lab) -> list[Impairment]:
    return [Impairment.from_json(item) for item in lab.impairments]


def _commit(lab: Lab, before: list[Impairment], after: list[Impairment]) -> None:
    old, new = wanted(lab, before), wanted(lab, after)
    try:
        _apply(lab, old, new)
    finally:
        lab.impairments = [imp.to_json() for imp in after]
        lab.save()


def apply(lab: Lab, imp: Impairment) -> None:
    """Add (or replace: same kind, link and direction) an impairment, while traffic flows."""
    if imp.kind in LINK_KINDS:
        if imp.link not in lab.links():
            raise ImpairmentError(f"link: must be one of {', '.join(lab.links())} (got {imp.link!r})")
        if imp.link == "tunnel" and imp.kind == "vpn-block":
            raise ImpairmentError("vpn-block: choose a link the tunnel's UDP crosses (hub, broadband, …)")
    before = active(lab)
    parts = _expand(imp)
    keys = {p.key() for p in parts}
    after = [p for p in before if p.key() not in keys] + parts
    _commit(lab, before, after)


def clear(lab: Lab, link: str | None = None, kind: str | None = None, direction: str | None = None) -> int:
    """Remove impairments matching the filters (none given: all). Returns how many were removed."""
    before = active(lab)
    dirs = None if direction in (None, "both") else {direction}

    def matches(imp: Impairment) -> bool:
        return (
            (link is None or imp.link == link)
            and (kind is None or imp.kind == kind)
            and (dirs is None or imp.direction in dirs)
        )

    after = [imp for imp in before if not matches(imp)]
    _commit(lab, before, after)
    return len(before) - len(after)


def counters(lab: Lab, link: str, direction: str) -> tuple[int, int]:
    """``(IPv4 packets seen, packets dropped)`` by the netdev hook of one link direction.

    The lab's own ground truth for loss. Counters start when the first impairment touches that
    link end and restart whenever its rules change.
    """
    if direction not in ("up", "down"):
        raise ImpairmentError("direction: counters are per direction (up or down)")
    role, ifname = _ingress(lab, Impairment("loss", link, direction))
    done = lab.exec(role, ["nft", "-j", "list", "chain", "netdev", NFT_TABLE, _chain(ifname)], check=False)
    if done.returncode != 0:
        return (0, 0)
    seen = dropped = 0
    for item in json.loads(done.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        packets = sum(e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e)
        if rule.get("comment") == "seen":
            seen += packets
        else:
            dropped += packets
    return seen, dropped


def ramp(
    lab: Lab,
    imp: Impairment,
    field: str,
    start: float,
    end: float,
    over: float,
    steps: int,
    on_step: Callable[[Impairment], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Move ``field`` of ``imp`` from ``start`` to ``end`` in ``steps`` equal steps over ``over`` s."""
    if steps < 1:
        raise ImpairmentError("steps: must be ≥ 1")
    if field not in ("percent", "delay_ms", "jitter_ms", "rate_kbit"):
        raise ImpairmentError(f"ramp: cannot ramp {field!r}")
    t0 = time.monotonic()
    for index in range(steps + 1):
        value = start + (end - start) * index / steps
        step = make(imp.kind, imp.link, imp.direction, **{**_params(imp), field: value})
        if step.kind == "delay" and step.delay_ms <= 0:
            clear(lab, step.link, "delay", step.direction)
        else:
            apply(lab, step)
        if on_step is not None:
            on_step(step)
        if index < steps:
            target = t0 + over * (index + 1) / steps
            sleep(max(0.0, target - time.monotonic()))


def _params(imp: Impairment) -> dict[str, Any]:
    data = asdict(imp)
    for key in ("kind", "link", "direction"):
        data.pop(key)
    return data


def summary(items: Iterable[Impairment]) -> str:
    lines = [f"  {imp.describe()}" for imp in items]
    return "\n".join(lines) if lines else "  (none)"
