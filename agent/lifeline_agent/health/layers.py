"""The rules that judge each layer from its own evidence (probes of its targets, local facts).

The layers and their words are the wire's vocabulary (:mod:`lifeline_wire.layers`). Every rule
returns a :class:`LayerFinding` — a raw state, a cause from the wire's closed set and a reason in words
a supervisor reads, rendered from those fields — or None when it has no evidence. Minimum
durations live here (through :class:`~lifeline_agent.health.hysteresis.Held`); recovery holds live
in the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lifeline_agent.config import Target, Thresholds
from lifeline_agent.health.facts import RouteFacts, VpnFacts
from lifeline_agent.health.hysteresis import SEVERITY, Held
from lifeline_agent.health.series import REFUSED, TargetSeries, loss_view
from lifeline_agent.sources.cellular import CellularFacts
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.wifi import WifiFacts
from lifeline_wire.layers import FAILED_TEXT, SUBJECTS, degraded_text, layer_of, ms, pct

CAD_REFUSED = "CAD server refusing connections"
VPN_INFERRED = "VPN tunnel down (home VPN router)"
# Why the hotspot cannot carry the position, in the words the page, board and warning use.
HOTSPOT_NO_INTERNET = "hotspot not ready: hotspot has no internet"
HOTSPOT_UNREACHABLE = "hotspot not ready: hotspot off or out of reach"
HOTSPOT_OFF = "hotspot not ready: hotspot off or unplugged"
# Roles of backup-path targets that answer from the hotspot itself (the rest are reached through it).
HOTSPOT_ROLES = ("link", "router")


@dataclass(frozen=True, slots=True)
class Tuning:
    """Durations and limits of the model that are judgement rather than site policy.

    Site policy (the degraded and critical bands) is :class:`~lifeline_agent.config.Thresholds`.
    """

    fail_hold: float = 2.0  # all probes of a layer failing this long (≥ 2 rounds) ⇒ failed
    # … or the layer's probes and every probe whose packets cross it failing this long together
    # (their rounds are spread over the interval, so together they time an outage to a fraction of
    # a second; a little over the fail hold, so a 2 s blackout never reaches it)
    crossing_hold: float = 2.1
    degrade_hold: float = 3.0  # a degraded condition must hold this long
    quality_hold: float = 15.0  # jitter, MOS, critical RTT and radio signal must hold this long
    recover_hold: float = 10.0  # a better state must hold this long before it is announced
    rtt_jump: float = 4.0  # RTT past the degraded band and this many times the path's usual is slow
    overdue_min: float = 0.15  # a round unanswered this long past its due time counts as lost …
    overdue_rtts: float = 4.0  # … or this many recent RTTs, whichever is longer (≤ its timeout)
    min_loss_rounds: int = 3  # loss counts once this many rounds lost something …
    min_loss_episodes: int = 2  # … in more than one burst (a single 2 s spike is not sustained loss)
    spike_max: float = 5.0  # … or in one burst longer than this
    recent: float = 10.0  # span of "recent" RTT, jitter and loss level
    trend_window: float = 30.0  # least-squares window of the trends
    trend_min_points: int = 10  # one-second bins a trend needs
    trend_min_episodes: int = 3  # separate loss bursts before a loss trend is believed
    # … and a rising loss trend must hold this long before it counts (a fit needs trend_min_points
    # seconds of the current run of loss as well, so a burst of a few seconds never gets that far)
    trend_hold: float = 1.0
    trend_onset_gap: float = 5.0  # a run of loss begins after this long without a lost packet
    # A loss trend's slope must stand this many standard errors out of the noise (2 read a steady
    # 20 % each way as rising in 1 of 30 simulated minutes; a ramp's is clear of 2.5 as soon).
    trend_sigmas: float = 2.5
    # Sustained loss in each direction at which CAD is assumed lost (0.5: 75 % of round trips): a
    # CAD client gives up after ~5 s without an answer, which under loss takes several
    # retransmissions of one segment lost in a row; at 50 % each way that happens within seconds.
    cad_loss_dead: float = 0.5
    level_risk_max: float = 0.7  # a loss level alone (no rising trend) stays below the page band
    session_answered: float = 1.0  # a CAD session acknowledged within this is getting its answers
    session_dying: float = 3.5  # … one waiting longer than this is dying (the client gives up at ~5 s)
    session_fresh: float = 5.0  # CAD session facts older than this say nothing about now
    cad_outage_dead: float = 5.0  # seconds of total loss at which CAD is assumed lost
    rtt_dead: float = 2.0  # RTT at which CAD sessions freeze (TCP timers fire, RDP stalls)
    wifi_dead_dbm: float = -85.0  # Wi-Fi signal at which the association drops
    horizon: float = 120.0  # time-to-loss at which the risk starts to rise above 0
    facts_stale: float = 30.0  # facts older than this count as no data
    bands: tuple[tuple[str, float], ...] = (("low", 0.0), ("watch", 0.3), ("warn", 0.5), ("page", 0.8))

    def band_floor(self, name: str) -> float:
        return dict(self.bands)[name]


@dataclass(frozen=True, slots=True)
class LayerFinding:
    state: str  # ok | degraded | failed | unknown
    reason: str
    # What kind of trouble, one of lifeline_wire.layers.CAUSES: "loss" (some packets lost),
    # "silent" (a target stopped answering) and "signal" (weak radio) explain failures further
    # along the chain; "power" (home power out) explains the home side failing; the quality causes
    # (latency, jitter, voice, slow_answer), "handshake" and "down" explain nothing.
    cause: str = "none"
    figure: str = ""  # the measured number behind the cause, in words ("4.2 %", "RTT 320 ms")


def degraded(layer: str, cause: str, figure: str) -> LayerFinding:
    """A degraded layer, its sentence rendered from its fields: "home network losing packets (4.2 %)"."""
    return LayerFinding("degraded", degraded_text(layer, cause, figure), cause, figure)


def target_layer(target: Target) -> str:
    """The layer a configured target's probes speak for (the wire's rule over its role and path)."""
    return layer_of(target.role, target.path)


def worst(*findings: LayerFinding | None) -> LayerFinding | None:
    """The most severe finding; on a tie the first (facts are named before probes)."""
    best: LayerFinding | None = None
    for f in findings:
        if f is not None and (best is None or SEVERITY[f.state] > SEVERITY[best.state]):
            best = f
    return best


def dbm(value: float, unit: str = "dBm") -> str:
    return f"{value:.0f} {unit}".replace("-", "−")


def all_failing(series: Sequence[TargetSeries], now: float) -> bool:
    """Every live probe of a layer failed its last round (the layer may be going down)."""
    live = [s for s in series if not s.stale(now)]
    return bool(live) and all(s.streak >= 1 for s in live)


def overdue_margin(series: TargetSeries, now: float, tu: Tuning) -> float:
    """How long past its due time a round may go unanswered before it counts as lost: a few
    recent RTTs, at least ``overdue_min``, at most the target's own timeout."""
    rtt = series.recent_rtt(now, tu.recent)
    wait = tu.overdue_min if rtt is None else max(tu.overdue_min, tu.overdue_rtts * rtt)
    return min(series.target.timeout, wait)


def crossing_outage(
    own: Sequence[TargetSeries],
    crossing: Sequence[TargetSeries],
    now: float,
    tu: Tuning,
    not_before: float | None = None,
) -> float:
    """How long a layer's probes and those crossing it have all gone unanswered together (0: not).

    A layer's own probes see a cut only once a round a second: its length is known to a second.
    Every probe further along crosses the layer too, and their rounds fall elsewhere in the
    interval, so together they say when the silence began and that it still holds to a fraction of
    a second. Every own probe must be failing, and no probe crossing the layer may have been
    answered since the silence began (a probe with no round since then says nothing).
    """
    if not own:
        return 0.0
    # The layer carried traffic when its own probes were last answered: only what failed after
    # that is about this layer (a CAD server down for a minute says nothing about the tunnel).
    since = [t for t in (*(s.last_answered() for s in own), not_before) if t is not None]
    after = max(since, default=None)
    spans = []
    for s in own:
        bounds = s.outage_bounds(now, overdue_margin(s, now, tu), after)
        if bounds is None:
            return 0.0
        spans.append(bounds)
    first = min(b[1] for b in spans)
    for s in crossing:
        if s.stale(now) or s.last is None:
            continue
        if s.last.success:
            if s.last.began >= first:
                return 0.0  # answered since: traffic crosses the layer
            continue
        bounds = s.outage_bounds(now, overdue_margin(s, now, tu), after)
        if bounds is not None:
            spans.append(bounds)
    if sum(b[0] for b in spans) < 3:
        return 0.0
    return max(b[2] for b in spans) - min(b[1] for b in spans)


def judge_probes(
    layer: str,
    series: Sequence[TargetSeries],
    now: float,
    th: Thresholds,
    tu: Tuning,
    held: Held,
    not_before: float | None = None,
    crossing: Sequence[TargetSeries] = (),
    loss_since: float | None = None,
) -> LayerFinding | None:
    """Judge a layer from its targets' recent rounds (None when no target reports).

    ``not_before``: failures before this moment are explained by a layer further up the chain
    (its probes were failing too), so they do not count towards this layer's fail hold.
    ``crossing``: the probes of the layers behind this one whose packets cross it (they time a cut
    together with the layer's own, see :func:`crossing_outage`).
    ``loss_since``: loss before this moment is left out (an outage that is over and was reported
    as one is not packet loss of the path that came back).
    """
    live = [s for s in series if not s.stale(now)]
    echo = [s for s in live if s.target.kind == "icmp"]
    service = [s for s in live if s.target.kind in ("tcp", "dns")]

    def failing_for(s: TargetSeries) -> float:
        if not_before is None or s.streak_start is None:
            return s.failing_for(now)
        return max(0.0, now - max(s.streak_start, not_before))

    # Every probe of the layer failing for the fail hold: a hard cut.
    # An outage is seen from when the failed rounds began, and a round that is overdue by a few
    # RTTs counts as unanswered before its timeout: that is how the hold is measured.
    outages = [s.outage(now, overdue_margin(s, now, tu), not_before) for s in live]
    # (Rounds keep a grid, so spans are whole intervals give or take the scheduler's jitter.)
    cut = bool(live) and all(n >= 2 and span >= tu.fail_hold - 0.05 for n, span in outages)
    cut = cut or crossing_outage(live, crossing, now, tu, not_before) >= tu.crossing_hold
    # For CAD the port is what matters: a host that pings but refuses the CAD port is down, and so
    # is one whose port has not answered for the critical number of rounds. A refusal is an answer
    # ("nothing listens"), not a silence that a 2 s spike could explain: two rounds in a row say it.
    ports = [s for s in service if s.target.kind == "tcp"] if layer == "cad" else []
    refused = bool(ports) and all(
        s.streak >= 2 and s.last is not None and s.last.reason in REFUSED for s in ports
    )
    port_dead = bool(ports) and all(s.streak >= th.lost_probes_critical and failing_for(s) > 0 for s in ports)
    failed = cut or refused or port_dead

    silent = [s for s in live if s.streak >= th.lost_probes_degraded and failing_for(s) > 0]
    loss = loss_view(live, max(now - th.loss_window, loss_since or -math.inf))
    lossy = loss.ratio >= th.loss_degraded and loss.sustained(
        tu.min_loss_rounds, tu.min_loss_episodes, tu.spike_max
    )
    rtts = [r for r in (s.recent_rtt(now, tu.recent) for s in echo) if r is not None]
    rtt = max(rtts, default=None)
    jitters = [j for j in (s.recent_jitter(now, tu.recent) for s in echo) if j is not None]
    jitter = max(jitters, default=None)
    scores = [m for m in (s.mos(now, tu.recent, th.loss_window) for s in echo) if m is not None]
    mos = min(scores, default=None)
    waits = [r for r in (s.recent_rtt(now, tu.recent) for s in service) if r is not None]
    wait = max(waits, default=None)

    k = f"{layer}:"
    loss_held = held.update(k + "loss", lossy, now) >= tu.degrade_hold
    rtt_high = held.update(k + "rtt", rtt is not None and rtt >= th.rtt_degraded, now) >= th.rtt_hold
    # A jump far above this path's own usual RTT (a saturated uplink: bufferbloat) is news sooner
    # than the 60 s an absolute 150 ms needs: past the degraded band and several times the usual.
    usual = min((b for b in (s.base_rtt() for s in echo) if b is not None), default=None)
    jumped = rtt is not None and usual is not None and rtt >= th.rtt_degraded and rtt >= tu.rtt_jump * usual
    rtt_jump = held.update(k + "rtt_jump", jumped, now) >= tu.quality_hold
    rtt_crit_hold = min(th.rtt_hold, tu.quality_hold)
    rtt_crit = held.update(k + "rtt_crit", rtt is not None and rtt >= th.rtt_critical, now) >= rtt_crit_hold
    jittery = (
        held.update(k + "jitter", jitter is not None and jitter >= th.jitter_degraded, now) >= tu.quality_hold
    )
    poor = held.update(k + "mos", mos is not None and mos < th.mos_degraded, now) >= tu.quality_hold
    slow = (
        held.update(k + "slow", wait is not None and wait >= th.tcp_connect_degraded, now) >= tu.degrade_hold
    )

    if not live:
        return None
    if failed:
        return LayerFinding("failed", CAD_REFUSED if refused else FAILED_TEXT[layer], "down")
    if loss_held:
        # Before "not answering": under heavy loss a target misses several rounds in a row, and
        # that is still loss (it answers in between), not a target that went quiet.
        return degraded(layer, "loss", pct(loss.ratio))
    if silent:
        names = ", ".join(s.target.name for s in silent)
        return LayerFinding("degraded", f"{SUBJECTS[layer]}: {names} not answering", "silent")
    if (rtt_high or rtt_crit) and rtt is not None:
        return degraded(layer, "latency", f"RTT {ms(rtt)}")
    if rtt_jump and rtt is not None and usual is not None:
        return degraded(layer, "latency", f"RTT {ms(rtt)}, usually {ms(usual)}")
    if jittery and jitter is not None:
        return degraded(layer, "jitter", f"jitter {ms(jitter)}")
    if poor and mos is not None:
        return degraded(layer, "voice", f"MOS {mos:.1f}")
    if slow and wait is not None:
        return degraded(layer, "slow_answer", f"{wait:.1f} s")
    if rtt is not None:
        return LayerFinding("ok", f"answering (RTT {ms(rtt)})")
    if wait is not None:
        return LayerFinding("ok", f"answering ({ms(wait)})")
    return LayerFinding("ok", "answering")


def judge_power(
    facts: PowerFacts | None, now: float, th: Thresholds, tu: Tuning, held: Held
) -> LayerFinding | None:
    on_battery = facts is not None and facts.on_ac is False
    unplugged = held.update("power:battery", on_battery, now) >= tu.degrade_hold
    if facts is None or facts.on_ac is None:
        return None
    if facts.on_ac:
        return LayerFinding("ok", "on mains power")
    left = battery_words(facts)
    low = (facts.percent is not None and facts.percent < th.battery_critical_percent) or (
        facts.secs_left is not None and facts.secs_left < th.battery_critical_seconds
    )
    if low:
        return LayerFinding("failed", f"battery almost empty ({left}) — home power out", "power")
    if unplugged:
        return LayerFinding("degraded", "on battery — home power out", "power")
    return LayerFinding("ok", "just unplugged")


def battery_words(facts: PowerFacts) -> str:
    parts = []
    if facts.percent is not None:
        parts.append(f"{facts.percent:.0f} %")
    if facts.secs_left is not None and facts.secs_left != float("inf"):
        parts.append(f"{facts.secs_left / 60:.0f} min left")
    return ", ".join(parts) or "charge unknown"


def judge_link(
    wifi: WifiFacts | None, routes: RouteFacts | None, now: float, th: Thresholds, tu: Tuning, held: Held
) -> LayerFinding | None:
    primary_wifi = wifi if wifi is not None and wifi.path != "backup" else None
    signal = primary_wifi.signal_dbm if primary_wifi is not None and primary_wifi.connected else None
    weak = held.update("link:wifi", signal is not None and signal < th.wifi_rssi_degraded, now)
    if routes is not None and routes.primary_up is False:
        iface = f" ({routes.primary_interface})" if routes.primary_interface else ""
        return LayerFinding("failed", f"{FAILED_TEXT['link']}{iface}", "down")
    if primary_wifi is not None and not primary_wifi.connected:
        return LayerFinding("failed", "Wi-Fi disconnected", "down")
    if signal is not None:
        if weak >= tu.quality_hold:
            return LayerFinding("degraded", f"Wi-Fi signal weak ({dbm(signal)})", "signal")
        return LayerFinding("ok", f"Wi-Fi signal {dbm(signal)}")
    if routes is not None and routes.primary_up:
        return LayerFinding("ok", "connected")
    return None


def judge_vpn(facts: VpnFacts | None, tunnel_ok: bool, th: Thresholds) -> LayerFinding | None:
    """The tunnel from the laptop's own VPN client; None when the laptop has no tunnel interface."""
    if facts is None or not facts.present:
        return None
    if facts.up is False:
        return LayerFinding("failed", FAILED_TEXT["vpn"], "down")
    age = facts.handshake_age
    if age is not None:
        never = age == float("inf")
        if age >= th.handshake_critical:
            since = "no handshake yet" if never else f"no handshake for {age:.0f} s"
            if tunnel_ok:
                return LayerFinding(
                    "degraded", f"VPN handshake stale ({since}) though traffic still passes", "handshake"
                )
            return LayerFinding("failed", f"{FAILED_TEXT['vpn']} ({since})", "down")
        if age >= th.handshake_degraded:
            return LayerFinding("degraded", f"VPN handshake overdue ({age:.0f} s)", "handshake")
    return LayerFinding("ok", "tunnel up")


def judge_backup_facts(
    cellular: CellularFacts | None, wifi: WifiFacts | None, routes: RouteFacts | None, th: Thresholds
) -> LayerFinding | None:
    findings: list[LayerFinding | None] = []
    if routes is not None and routes.backup_interface and routes.backup_up is False:
        findings.append(LayerFinding("failed", f"{HOTSPOT_OFF}: {routes.backup_interface} down", "down"))
    if cellular is not None:
        if cellular.connected is False:
            findings.append(
                LayerFinding("failed", "hotspot not ready: hotspot has no mobile connection", "down")
            )
        weak = [
            f"{label} {dbm(value, unit)}"
            for label, value, limit, unit in (
                ("RSRP", cellular.rsrp, th.rsrp_degraded, "dBm"),
                ("RSRQ", cellular.rsrq, th.rsrq_degraded, "dB"),
                ("SINR", cellular.sinr, th.sinr_degraded, "dB"),
            )
            if value is not None and value < limit
        ]
        if weak:
            findings.append(LayerFinding("degraded", f"hotspot signal weak ({', '.join(weak)})", "signal"))
    if wifi is not None and wifi.path == "backup":
        if not wifi.connected:
            findings.append(
                LayerFinding("failed", "hotspot not ready: hotspot Wi-Fi disconnected (hotspot off?)", "down")
            )
        elif wifi.signal_dbm is not None and wifi.signal_dbm < th.wifi_rssi_critical:
            findings.append(
                LayerFinding("degraded", f"hotspot Wi-Fi weak ({dbm(wifi.signal_dbm)})", "signal")
            )
    return worst(*findings)
