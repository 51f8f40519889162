"""Risk that the position loses CAD soon, and the time left, from trends rather than thresholds.

Each signal that can end a CAD session gives a :class:`RiskPart`: a risk in 0..1, a predicted time
to loss, and a reason. The risk of the position is the largest part; its time to loss is the
soonest of the parts that matter (risk ≥ the "watch" band). Most parts extrapolate a trend to the
point where CAD dies:

- packet loss on the path to CAD (least-squares slope over the trend window) to the sustained loss
  CAD does not survive (``Tuning.cad_loss_dead``), and the loss level itself;
- a total outage to ``Tuning.cad_outage_dead`` seconds (a CAD client notices a dead link in 5–10 s);
- RTT rising to ``Tuning.rtt_dead``; poor MOS held for the quality hold (never above "watch");
- WireGuard handshake age to the 180 s at which keys are rejected;
- battery seconds left while the house has no power; Wi-Fi signal fading to where it drops; a
  weak hotspot signal while the position runs on it.

A time to loss becomes a risk through ``1 - ttl / horizon``: 60 s left reads 0.5 (warn), 24 s
left 0.8 (page) with the default two-minute horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lifeline_agent.config import Thresholds
from lifeline_agent.health.facts import SessionFacts, VpnFacts
from lifeline_agent.health.hysteresis import Held
from lifeline_agent.health.layers import Tuning, battery_words, dbm
from lifeline_agent.health.series import TargetSeries, fit, loss_bins, loss_view, rtt_bins
from lifeline_agent.sources.cellular import CellularFacts
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.wifi import WifiFacts
from lifeline_wire.layers import ms, pct

INF = math.inf


@dataclass(frozen=True, slots=True)
class RiskPart:
    risk: float
    ttl: float
    reason: str


@dataclass(frozen=True, slots=True)
class RiskInputs:
    now: float
    path: Sequence[TargetSeries]  # the targets whose probes travel the way CAD traffic does
    failed_layer: str  # the first failed layer between the laptop and CAD ("" when none)
    failed_text: str
    failed_for: float  # seconds the CAD path has been out, counted from before the failure was declared
    power: PowerFacts | None
    vpn: VpnFacts | None
    tunnel_ok: bool  # an in-tunnel probe worked within the recent span
    wifi: WifiFacts | None
    wifi_history: Sequence[tuple[float, float]]  # (monotonic time, dBm) of the primary Wi-Fi
    cellular: CellularFacts | None
    on_backup: bool
    # The home side's probes (router, ISP) when they travel with CAD's packets: loss that starts at
    # home reaches them as much as the probes to CAD, so they add to the evidence of its trend.
    home: Sequence[TargetSeries] = ()
    session: SessionFacts | None = None  # the CAD sessions' TCP state, when read lately


def ttl_risk(ttl: float, horizon: float) -> float:
    if ttl <= 0:
        return 1.0
    return max(0.0, min(1.0, 1.0 - ttl / horizon))


def combine(parts: Sequence[RiskPart], tu: Tuning) -> RiskPart:
    """The largest risk, with the soonest time to loss among the parts that matter."""
    top = max(parts, key=lambda p: p.risk, default=RiskPart(0.0, INF, "stable"))
    floor = tu.band_floor("watch")
    ttl = min((p.ttl for p in parts if p.risk >= floor), default=INF)
    return RiskPart(top.risk, ttl, top.reason if top.risk > 0 else "stable")


def assess(inp: RiskInputs, th: Thresholds, tu: Tuning, held: Held) -> RiskPart:
    parts = [
        _outage(inp, tu),
        _session(inp, tu),
        *_loss(inp, th, tu, held),
        _rtt(inp, th, tu),
        _quality(inp, th, tu, held),
        _handshake(inp, th, tu),
        _battery(inp, th, tu),
        _wifi(inp, th, tu),
        _cellular(inp, th),
    ]
    return combine([p for p in parts if p is not None], tu)


def _outage(inp: RiskInputs, tu: Tuning) -> RiskPart | None:
    live = [s for s in inp.path if not s.stale(inp.now)]
    down_for = min((s.failing_for(inp.now) for s in live), default=0.0)
    if not live or not all(s.streak for s in live):
        down_for = 0.0
    if inp.failed_layer and (inp.failed_layer == "cad" or down_for > 0 or not live):
        return RiskPart(1.0, max(0.0, tu.cad_outage_dead - inp.failed_for), inp.failed_text)
    if inp.failed_layer:
        # A layer on the way is down but the probes to CAD still come back: serious, not yet lost.
        return RiskPart(0.6, INF, f"{inp.failed_text} (CAD still answers)")
    if down_for > 0:
        # The first lost rounds of what may become an outage: visible, below every alerting band.
        share = min(1.0, down_for / tu.fail_hold)
        return RiskPart(0.25 * share, INF, "probes to CAD are not answering")
    return None


def each_way(ratio: float) -> float:
    """The loss in each direction that gives this round-trip loss, if both directions lose alike.

    Impairments act per direction, so a loss that rises evenly in each direction compounds into a
    round-trip loss that rises fast at first and slowly later: a straight line through the round
    trip over-states how soon it gets worse. Trends are fitted, and CAD's limit set, per direction.
    """
    return 1.0 - math.sqrt(max(0.0, 1.0 - min(1.0, ratio)))


def _loss(inp: RiskInputs, th: Thresholds, tu: Tuning, held: Held) -> list[RiskPart]:
    now, dead = inp.now, tu.cad_loss_dead
    window = loss_view(inp.path, now - tu.trend_window)
    recent = loss_view(inp.path, now - tu.recent)
    parts: list[RiskPart] = []
    sustained = window.sustained(tu.min_loss_rounds, tu.min_loss_episodes, tu.spike_max)
    if sustained and recent.sent:
        level = recent.ratio
        words = f"the path to CAD is losing {pct(level)} of packets"
        if each_way(level) >= dead and _answered(inp.session, tu):
            # The probes say CAD cannot last, the session itself says it still gets its answers:
            # a struggling session, not a dying one — no claim that it is being lost now.
            parts.append(RiskPart(tu.level_risk_max, INF, f"{words} (the CAD session still gets answers)"))
        elif each_way(level) >= dead:
            parts.append(RiskPart(1.0, 0.0, words))
        elif level > 0:
            # A loss level that holds is a quality problem CAD rides out (its retransmissions get
            # through): worth a warning, never a page that claims CAD will be lost.
            parts.append(RiskPart(min(each_way(level) / dead, tu.level_risk_max), INF, words))
    # The trend is fitted on the seconds in which something came back: a second in which nothing
    # did is an outage, judged by its length (``_outage``), and a two-second blackout at the end of
    # the window would otherwise read as loss climbing to 100 % (a ramp loses *some* packets first).
    sources = list(inp.path)
    home = loss_view(inp.home, now - tu.trend_window)
    if home.sent and window.sent and home.ratio >= 0.5 * window.ratio:
        sources += inp.home  # the loss is the home side's: every probe sees it alike
    bins = [b for b in loss_bins(sources, now - tu.trend_window, now) if b[1] < 1.0]
    # A step is not a ramp: loss that starts at some level and stays there fills the window with
    # lossy seconds after lossless ones, which a line through both reads as "rising" (a steady
    # 10 % each way read "rising (21–27 %, +0.9 %/s)" and paged). The trend is fitted on the
    # seconds since this run of loss began.
    bins = bins[_onset(bins, tu.trend_onset_gap) :]
    line = fit([(age, each_way(ratio), weight) for age, ratio, weight in bins])
    trend = (
        line is not None
        and window.sustained(tu.min_loss_rounds, tu.trend_min_episodes, tu.spike_max)
        and line.rising(tu.trend_min_points, tu.trend_sigmas)
        and line.level >= each_way(th.loss_degraded)
    )
    # One evaluation's fit over a burst is not a trend (the loss-spikes scenario paged "rising"
    # from a single evaluation in a 3 s burst): the rise must show for ``trend_hold`` first.
    trend_for = held.update("risk:loss_trend", trend, now)
    if line is not None and trend and trend_for >= tu.trend_hold:
        level = min(1.0, line.level)
        # The slope of a noisy fit is as likely over- as under-stated; the time is taken from its
        # lower bound (one standard error), so "within 40 s" errs on the side of coming true.
        ttl = max(0.0, (dead - level) / (line.slope - line.stderr))
        round_trip = 1.0 - (1.0 - level) ** 2
        rising = 2.0 * (1.0 - level) * line.slope  # of the round-trip loss, at this level
        parts.append(
            RiskPart(
                ttl_risk(ttl, tu.horizon),
                ttl,
                f"packet loss on the path to CAD rising ({pct(round_trip)}, +{rising * 100:.1f} %/s)",
            )
        )
    return parts


def _answered(session: SessionFacts | None, tu: Tuning) -> bool:
    """The CAD session demonstrably gets its answers (acknowledgements keep arriving)."""
    return (
        session is not None
        and session.sessions > 0
        and session.stalled <= 1
        and (session.since_ack or 0.0) < tu.session_answered
    )


def _session(inp: RiskInputs, tu: Tuning) -> RiskPart | None:
    """A CAD session that has waited for an acknowledgement longer than TCP's own recovery from a
    short blackout takes (its timeouts of 0.2 + 0.4 + 0.8 + 1.6 s): dying, whatever the probes say."""
    s = inp.session
    if s is None or not s.sessions or s.since_ack is None or s.since_ack < tu.session_dying:
        return None
    return RiskPart(
        1.0,
        0.0,
        f"the CAD session has had no answer for {s.since_ack:.0f} s"
        f" ({s.stalled:.0f} retransmissions in a row)",
    )


def _onset(bins: Sequence[tuple[float, float, float]], gap: float) -> int:
    """Index of the first lossy bin of the current run of loss: the run begins after the last
    ``gap`` seconds without a lost packet (0 when the run fills the window)."""
    start = 0
    previous: float | None = None
    for index, (age, ratio, _weight) in enumerate(bins):
        if ratio <= 0:
            continue
        if previous is None or age - previous > gap:
            start = index
        previous = age
    return start


def _rtt(inp: RiskInputs, th: Thresholds, tu: Tuning) -> RiskPart | None:
    echo = [s for s in inp.path if s.target.kind == "icmp"]
    line = fit(rtt_bins(echo, inp.now - tu.trend_window, inp.now))
    if line is None or not line.rising(tu.trend_min_points) or line.level < th.rtt_degraded:
        return None
    ttl = max(0.0, (tu.rtt_dead - line.level) / line.slope)
    reason = f"delay on the path to CAD rising (RTT {ms(line.level)}, +{ms(line.slope)}/s)"
    # Delay alone rarely ends a session: it can warn, never page.
    return RiskPart(min(ttl_risk(ttl, tu.horizon), tu.band_floor("page") - 0.1), ttl, reason)


def _quality(inp: RiskInputs, th: Thresholds, tu: Tuning, held: Held) -> RiskPart | None:
    echo = [s for s in inp.path if s.target.kind == "icmp" and not s.stale(inp.now)]
    scores = [m for m in (s.mos(inp.now, tu.recent, th.loss_window) for s in echo) if m is not None]
    score = min(scores, default=None)
    poor = held.update("risk:mos", score is not None and score < th.mos_degraded, inp.now)
    bad = held.update("risk:mos_crit", score is not None and score < th.mos_critical, inp.now)
    if score is None:
        return None
    if bad >= tu.quality_hold:
        return RiskPart(0.45, INF, f"voice quality on the path to CAD is bad (MOS {score:.1f})")
    if poor >= tu.quality_hold:
        return RiskPart(0.3, INF, f"voice quality on the path to CAD is poor (MOS {score:.1f})")
    return None


def _handshake(inp: RiskInputs, th: Thresholds, tu: Tuning) -> RiskPart | None:
    vpn = inp.vpn
    if vpn is None or not vpn.present or vpn.handshake_age is None:
        return None
    age = vpn.handshake_age
    if age < th.handshake_degraded:
        return None
    ttl = max(0.0, th.handshake_critical - age) if age != INF else 0.0
    risk = ttl_risk(ttl, tu.horizon)
    if inp.tunnel_ok and ttl == 0:
        risk = min(risk, 0.6)  # traffic still passes: the counter may be stale, not the tunnel
    shown = "never" if age == INF else f"{age:.0f} s ago"
    return RiskPart(risk, ttl, f"VPN handshake overdue (last {shown}; keys expire at 180 s)")


def _battery(inp: RiskInputs, th: Thresholds, tu: Tuning) -> RiskPart | None:
    power = inp.power
    if power is None or power.on_ac is not False:
        return None
    ttl = power.secs_left if power.secs_left is not None else INF
    risk = max(0.3, ttl_risk(ttl, tu.horizon))
    low = (power.percent is not None and power.percent < th.battery_critical_percent) or (
        power.secs_left is not None and power.secs_left < th.battery_critical_seconds
    )
    if low:
        risk = max(risk, 0.5)
    return RiskPart(risk, ttl, f"on battery — home power out ({battery_words(power)})")


def _wifi(inp: RiskInputs, th: Thresholds, tu: Tuning) -> RiskPart | None:
    wifi = inp.wifi
    if inp.on_backup or wifi is None or wifi.path == "backup" or not wifi.connected:
        return None
    if wifi.signal_dbm is None:
        return None
    parts: list[RiskPart] = []
    if wifi.signal_dbm < th.wifi_rssi_critical:
        parts.append(RiskPart(0.3, INF, f"Wi-Fi signal weak ({dbm(wifi.signal_dbm)})"))
    points = [(t - inp.now, v, 1.0) for t, v in inp.wifi_history if t >= inp.now - tu.trend_window]
    line = fit(points)
    if (
        line is not None
        and line.falling(max(5, tu.trend_min_points // 2))
        and line.level < th.wifi_rssi_degraded
    ):
        ttl = max(0.0, (line.level - tu.wifi_dead_dbm) / -line.slope)
        risk = min(ttl_risk(ttl, tu.horizon), 0.85)
        parts.append(RiskPart(risk, ttl, f"Wi-Fi signal fading ({dbm(line.level)}, {line.slope:.1f} dB/s)"))
    return max(parts, key=lambda p: p.risk, default=None)


def _cellular(inp: RiskInputs, th: Thresholds) -> RiskPart | None:
    cell = inp.cellular
    if not inp.on_backup or cell is None:
        return None
    weak = (cell.rsrp is not None and cell.rsrp < th.rsrp_critical) or (
        cell.sinr is not None and cell.sinr < th.sinr_critical
    )
    if not weak:
        return None
    shown = dbm(cell.rsrp) if cell.rsrp is not None else f"SINR {dbm(cell.sinr or 0.0, 'dB')}"
    return RiskPart(0.35, INF, f"on the hotspot with a weak signal ({shown})")
