"""A simulated home position feeding the health model realistic per-second probe rounds.

Conditions are set per layer (loss, added delay, jitter, down, refused) and act on every target
at or behind that layer along the chain, the way a real impairment does: loss at the ISP is seen
by the internet, VPN, agency, DNS and CAD probes alike. Each target gets one round per second with
its configured number of echoes; RTT noise is Gaussian and jitter is computed by the agent's own
RFC 3550 estimator, exactly as the runner does. A seeded RNG keeps every run identical.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from lifeline_agent.config import Target, Thresholds
from lifeline_agent.health import Assessment, HealthModel, PowerFacts, RouteFacts, VpnFacts, WifiFacts
from lifeline_agent.health.layers import target_layer
from lifeline_agent.probes.base import ProbeResult
from lifeline_agent.probes.stats import JitterEstimator
from lifeline_wire.layers import CHAIN

START_WALL = 1_700_000_000.0


class FakeClock:
    """Wall and monotonic time that move only when the test says so."""

    def __init__(self) -> None:
        self.mono = 1000.0

    def time(self) -> float:
        return START_WALL + self.mono

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds


@dataclass
class Cond:
    loss: float = 0.0  # share of echoes lost here (0..1)
    delay: float = 0.0  # added round-trip seconds
    noise: float = 0.0  # standard deviation of the added delay
    down: bool = False  # nothing passes
    refused: bool = False  # TCP connects are refused (the host answers, the port is closed)


def laptop_vpn_targets() -> list[Target]:
    return [
        Target("gw", "router", "icmp", "192.168.1.1", path="primary"),
        Target("isp", "internet", "icmp", "1.1.1.1", path="primary"),
        Target("vpn-gw", "vpn", "icmp", "10.8.0.1", path="tunnel"),
        Target("agency-core", "router", "icmp", "10.20.0.1", path="tunnel"),
        Target("agency-dns", "dns", "dns", "10.20.0.53", path="tunnel", query="cad.agency.example"),
        Target("cad-ping", "cad", "icmp", "10.30.0.10", path="tunnel", count=5, spacing=0.02),
        Target("cad-port", "cad", "tcp", "10.30.0.10", path="tunnel", port=7000),
        Target("hotspot-vpn", "vpn", "icmp", "203.0.113.10", path="backup", interface="usb0"),
    ]


def router_variant_targets() -> list[Target]:
    """Home-VPN-router variant: no tunnel on the laptop, so no VPN-layer target of its own."""
    return [t for t in laptop_vpn_targets() if t.name != "vpn-gw"]


BASE_RTT = {
    "router": 0.002,
    "internet": 0.015,
    "vpn": 0.030,
    "agency": 0.032,
    "dns": 0.034,
    "cad": 0.035,
    "backup": 0.048,
}


@dataclass
class Position:
    model: HealthModel
    clock: FakeClock
    targets: list[Target]
    rng: random.Random
    conds: dict[str, Cond] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    vpn_handshake_every: float | None = 120.0  # WireGuard rekey with traffic; None = no VPN facts
    counters: bool = False  # the VPN facts carry byte counters (the peer sends while the tunnel carries)
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float = 0.0
    last_rx: float = 0.0
    history: list[Assessment] = field(default_factory=list)
    evaluate_every_probe: bool = False
    unlucky: set[str] = field(default_factory=set)  # targets whose rounds all happen to be lost
    between: list[Assessment] = field(default_factory=list)  # the evaluations after each probe
    _jitter: dict[str, JitterEstimator] = field(default_factory=dict)

    def cond(self, layer: str) -> Cond:
        return self.conds.setdefault(layer, Cond())

    def clear(self) -> None:
        self.conds.clear()

    def _through(self, target: Target) -> list[Cond]:
        layer = target_layer(target)
        if layer == "backup":
            return [self.cond("backup")]
        # The concentrator's box, when a test breaks it (only then: each condition draws noise).
        box = [self.conds["concentrator"]] if "concentrator" in self.conds else []
        if layer == "vpn" and target.path == "primary":
            # The concentrator's public address: over the home side to the concentrator's box.
            return [self.cond(name) for name in CHAIN[1 : CHAIN.index("internet") + 1]] + box
        depth = CHAIN.index(layer)
        # DNS is a side branch: CAD traffic to an address does not pass through the resolver.
        conds = [self.cond(name) for name in CHAIN[1 : depth + 1] if name != "dns" or layer == "dns"]
        return [*conds, *box] if depth >= CHAIN.index("vpn") else conds

    def tunnel_carries(self) -> bool:
        names = ("link", "router", "internet", "vpn", "concentrator")
        return not any(self.conds[name].down for name in names if name in self.conds)

    def probe(self, target: Target) -> ProbeResult:
        conds = self._through(target)
        base = BASE_RTT[target_layer(target)]
        if any(c.down for c in conds) or target.name in self.unlucky:
            reason = "timeout"
            return ProbeResult(False, reason, sent=target.count if target.kind == "icmp" else 1)
        if target.kind == "tcp" and any(c.refused for c in conds):
            return ProbeResult(False, "refused", sent=1)
        keep = 1.0
        for c in conds:
            keep *= 1.0 - c.loss
        rtts: list[float | None] = []
        for _ in range(target.count):
            if self.rng.random() >= keep:
                rtts.append(None)
                continue
            rtt = base + sum(c.delay + abs(self.rng.gauss(0.0, c.noise)) for c in conds)
            rtts.append(rtt + abs(self.rng.gauss(0.0, 0.0008)))
        got = [r for r in rtts if r is not None]
        jit = self._jitter.setdefault(target.name, JitterEstimator())
        jitter = jit.update_many(rtts) if jit.primed or got else None
        if not got:
            return ProbeResult(False, "timeout", sent=len(rtts), received=0, rtts=tuple(rtts), jitter=jitter)
        return ProbeResult(
            True,
            rtt_min=min(got),
            rtt_avg=sum(got) / len(got),
            rtt_max=max(got),
            jitter=jitter,
            sent=len(rtts),
            received=len(got),
            rtts=tuple(rtts),
        )

    def second(self) -> Assessment:
        """One second of a position's life: every target probes once, facts refresh, evaluate."""
        step = 0.8 / max(1, len(self.targets))
        for target in self.targets:
            self.clock.advance(step)
            self.model.observe_probe(target, self.probe(target))
            if self.evaluate_every_probe:  # as the agent does while a probe keeps failing
                self.between.append(self.model.evaluate())
        for source, record in self.facts.items():
            self.model.observe_facts(source, record)
        if self.vpn_handshake_every is not None and "vpn" not in self.facts:
            if not self.counters:
                age = self.clock.monotonic() % self.vpn_handshake_every
                self.model.observe_facts("vpn", VpnFacts(True, "wg0", "wireguard", True, age))
            else:
                now = self.clock.monotonic()
                self.tx_bytes += 600
                if self.tunnel_carries():
                    # Data comes back while anything beyond the concentrator answers (CAD alone
                    # down: the rest still replies). Handshakes complete while it serves the
                    # tunnel: every 2 minutes, and 15 s after the peer last sent data (WireGuard
                    # retries a handshake when it hears nothing back while sending).
                    if not self.cond("agency").down:
                        self.rx_bytes += 600
                        self.last_rx = now
                    quiet = now - self.last_rx >= 15.0 and now - self.last_handshake >= 15.0
                    if quiet or now - self.last_handshake >= self.vpn_handshake_every:
                        self.last_handshake = now
                        self.rx_bytes += 92
                facts = VpnFacts(
                    True, "wg0", "wireguard", True, now - self.last_handshake, self.rx_bytes, self.tx_bytes
                )
                self.model.observe_facts("vpn", facts)
        self.clock.advance(0.2)
        assessment = self.model.evaluate()
        self.history.append(assessment)
        return assessment

    def run(self, seconds: int) -> list[Assessment]:
        return [self.second() for _ in range(seconds)]

    def until(self, seconds: int, stop: Callable[[Assessment], bool]) -> Iterator[Assessment]:
        for _ in range(seconds):
            a = self.second()
            yield a
            if stop(a):
                return


def make_position(
    targets: list[Target] | None = None,
    *,
    seed: int = 7,
    thresholds: Thresholds | None = None,
    vpn_facts: bool = True,
    position: str = "12",
    counters: bool = False,
) -> Position:
    clock = FakeClock()
    model = HealthModel(thresholds or Thresholds(), clock, position=position)
    pos = Position(
        model,
        clock,
        targets if targets is not None else laptop_vpn_targets(),
        random.Random(seed),
        vpn_handshake_every=120.0 if vpn_facts else None,
        counters=counters,
    )
    pos.last_handshake = pos.last_rx = clock.monotonic()
    pos.facts["power"] = PowerFacts(on_ac=True, percent=100.0)
    pos.facts["routes"] = RouteFacts("wlan0", True, "usb0", True, on_backup=False)
    pos.facts["wifi"] = WifiFacts("wlan0", True, -55.0, 300e6)
    if not vpn_facts:
        pos.facts["vpn"] = VpnFacts(present=False)
    return pos


@pytest.fixture
def position() -> Callable[..., Position]:
    """Build a simulated position (laptop VPN by default) that has settled for 30 healthy seconds."""

    def build(*args: object, settle: int = 30, **kwargs: object) -> Position:
        pos = make_position(*args, **kwargs)  # type: ignore[arg-type]
        pos.run(settle)
        return pos

    return build


@pytest.fixture
def home_router_targets() -> list[Target]:
    return router_variant_targets()
