"""Attribution: which layer a symptom belongs to, and what the verdict names.

A packet to CAD crosses every layer in turn, so one break is seen by every probe behind it, and
loss or delay that starts at home shows on every layer beyond. These rules charge each symptom to
the layer where it starts (each layer's judgement on its own evidence is in
:mod:`~lifeline_agent.health.layers`) and pick the first broken layer of the chain for the verdict.
They are functions of the probe series, the findings and the thresholds; the state they need
(the layers' tracked states, the VPN's byte counters) is handed in by
:class:`~lifeline_agent.health.model.HealthModel`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lifeline_agent.config import Thresholds
from lifeline_agent.health.assessment import NO_DATA, LayerStatus
from lifeline_agent.health.facts import RouteFacts, VpnFacts
from lifeline_agent.health.hysteresis import Held
from lifeline_agent.health.layers import (
    CAD_REFUSED,
    HOTSPOT_NO_INTERNET,
    HOTSPOT_ROLES,
    HOTSPOT_UNREACHABLE,
    VPN_INFERRED,
    LayerFinding,
    Tuning,
    all_failing,
    degraded,
    judge_probes,
    worst,
)
from lifeline_agent.health.series import REFUSED, TargetSeries, back_at, loss_view
from lifeline_wire.layers import AGENCY_SIDE, CAD_PATH, CHAIN, FAILED_TEXT, HOME_SIDE, QUALITY_CAUSES, ms, pct

# Each layer's probe series; "endpoint" holds the VPN probes sent outside the tunnel (the
# concentrator's public address), apart from the tunnel's own.
ByLayer = dict[str, list[TargetSeries]]
# (monotonic time, bytes received, bytes sent) of the VPN's counters, oldest first.
Counters = Sequence[tuple[float, float, float]]

# Bytes a silent tunnel's peer still sends now and then (a handshake response is 92, a keepalive
# 32): received bytes growing by more than this since a silence began mean data came back.
RX_CHATTER = 256
# Silence behind a layer ahead that still answers, with at least this share of its packets lost
# since the silence began, is loss (the burst eats every probe of a round or two), not an outage …
LOSSY_AHEAD = 0.2


def probes_crossing(layer: str, by_layer: ByLayer, on_backup: bool) -> list[TargetSeries]:
    """The probes of the layers behind ``layer`` whose packets cross it on their way."""
    at = CAD_PATH.index(layer)
    # DNS is a side branch: CAD traffic does not cross the resolver.
    behind = [b for b in CAD_PATH[at + 1 :] if not (layer == "dns" and b == "cad")]
    if layer in HOME_SIDE:
        behind.append("endpoint")  # the concentrator's public address is reached over the home
    # On the hotspot the tunnel no longer runs over the home network: only the ISP probe does.
    if on_backup and layer in HOME_SIDE:
        return [s for b in behind for s in by_layer[b] if s.target.path == "primary"]
    return [s for b in behind for s in by_layer[b] if s.target.path != "backup"]


def unless_traffic_passes(
    layer: str, finding: LayerFinding, by_layer: ByLayer, now: float, th: Thresholds
) -> LayerFinding:
    """A layer is not down while probes that cross it get answers: its own probes missed a run
    of rounds to loss (bursts on the home Wi-Fi), which is "losing packets", not "failed"."""
    if finding.reason == CAD_REFUSED:
        return finding  # the CAD port said no: that is an answer, not silence
    live = [s for s in by_layer[layer] if not s.stale(now)]
    starts = [t for t in (s.failed_since() for s in live) if t is not None]
    if not starts:
        return finding
    since = min(starts)
    crossing = probes_crossing(layer, by_layer, on_backup=False)
    if not any(s.answered_since(since) for s in crossing):
        return finding
    loss = loss_view(live, now - th.loss_window)
    return degraded(layer, "loss", pct(loss.ratio))


def unless_lossy_ahead(
    layer: str, finding: LayerFinding, by_layer: ByLayer, now: float, th: Thresholds, tu: Tuning
) -> LayerFinding:
    """Silence behind layers that keep answering but lose a good share of their packets is a
    loss burst eating every probe of a round or two, not an outage — until it has lasted as
    long as a CAD session survives silence (``Tuning.cad_outage_dead``): a 4 s burst of 40 %
    loss each way is ridden out, a path dying under loss is not."""
    if finding.reason == CAD_REFUSED:
        return finding
    live = [s for s in by_layer[layer] if not s.stale(now)]
    starts = [t for t in (s.failed_since() for s in live) if t is not None]
    if not starts or now - min(starts) >= tu.cad_outage_dead:
        return finding
    since = min(starts)
    at = CAD_PATH.index(layer)
    ahead = [
        group
        for b in CAD_PATH[:at]
        if b != "dns"
        for group in [[s for s in by_layer[b] if not s.stale(now) and s.target.path != "backup"]]
        if group
    ]
    # Every layer ahead must keep answering: one gone silent is a cut there, not loss here.
    if not ahead or not all(any(s.answered_since(since) for s in group) for group in ahead):
        return finding
    if max(loss_view(group, since).ratio for group in ahead) < LOSSY_AHEAD:
        return finding
    loss = loss_view(live, now - th.loss_window)
    return degraded(layer, "loss", pct(loss.ratio))


def recently_failing(series: list[TargetSeries], now: float, tu: Tuning) -> bool:
    """A layer's probes started failing lately (an older failure that never reached the fail
    hold — a slow probe interval — must not hold the layers behind it forever)."""
    live = [s for s in series if not s.stale(now)]
    limit = tu.fail_hold + max((s.target.interval for s in live), default=1.0) + 1.0
    return min(s.failing_for(now) for s in live) < limit


def dns_lost_with_the_path(
    found: dict[str, LayerFinding | None], by_layer: ByLayer, now: float, th: Thresholds, tu: Tuning
) -> None:
    """A resolver that misses a few queries in a row while the path to it loses packets is
    losing packets, not down.

    A DNS probe is one query a round: under 20 % round-trip loss three rounds in a row are lost
    every minute or so, while the multi-echo probes on the same way merely lose some echoes. So
    until the silence is long (the critical number of rounds), it is charged to the loss: to
    the first layer on the way that loses packets, else to DNS as loss.
    """
    finding = found["dns"]
    if finding is None or not (finding.cause == "silent" or finding.state == "failed"):
        return
    live = [s for s in by_layer["dns"] if not s.stale(now)]
    if not live or max(s.streak for s in live) >= th.lost_probes_critical:
        return
    # Loss on the way lately: any echo lost by the probes that share the way to the agency.
    # (An outage further up is not loss: the silence is its echo, and the chain says so.)
    start = now - tu.recent
    losing = {}
    for layer in ("router", "internet", "vpn", "agency", "cad"):
        ahead = found[layer]
        if all_failing(by_layer[layer], now) or (ahead is not None and ahead.state == "failed"):
            return
        view = loss_view([s for s in by_layer[layer] if not s.stale(now)], start)
        if view.lost:
            losing[layer] = view.ratio
    if not losing:
        return
    own = _loss_ratio(by_layer["dns"], now, th.loss_window)
    found["dns"] = degraded("dns", "loss", pct(own))
    first = next(iter(losing))
    charged = {"router": "link"}.get(first, first)
    current = found[charged]
    lossy = losing[first] >= th.loss_degraded
    if lossy and charged in ("link", "internet") and (current is None or current.state == "ok"):
        found[charged] = degraded(charged, "loss", pct(losing[first]))


def home_side_attribution(
    found: dict[str, LayerFinding | None], by_layer: ByLayer, now: float, th: Thresholds, tu: Tuning
) -> None:
    """Charge trouble to the layer where it starts, not to every layer that sees it.

    - Partial loss to the home router (the first hop) is the home network's: Wi-Fi or the cable
      drops packets; a router that fails stops answering altogether (that stays the router's).
    - Loss seen further along that the router or ISP probes see too (at least half as much)
      started there: a spike on the home Wi-Fi reaches every probe behind it.
    - Delay or jitter seen beyond the home (VPN, agency, CAD) that the router or the ISP probes
      already show is theirs: a saturated uplink slows the tunnel, the tunnel did not slow down.
    """
    router = found["router"]
    if router is not None and router.state == "degraded" and router.cause == "loss":
        found["link"] = worst(found["link"], degraded("link", "loss", router.figure))
        found["router"] = LayerFinding("ok", "answering (the loss is on the way to it)")
    elif router is not None and router.state == "failed":
        # Under heavy loss the router misses every echo for a while and is judged failed; the
        # loss that led there (it answered in between) still belongs to the home network.
        live = [s for s in by_layer["router"] if not s.stale(now)]
        loss = loss_view(live, now - th.loss_window)
        # Partial loss: some echoes of a round lost, or loss in three bursts or more with
        # answers between them (two outages in a minute are two outages, not a lossy link).
        partial = loss.partial_seconds > 0 or loss.episodes >= 3
        lossy = partial and loss.ratio >= th.loss_degraded
        if lossy and loss.sustained(tu.min_loss_rounds, tu.min_loss_episodes, tu.spike_max):
            found["link"] = worst(found["link"], degraded("link", "loss", pct(loss.ratio)))
    for layer in ("internet", *AGENCY_SIDE):
        finding = found[layer]
        if finding is None or finding.state != "degraded" or finding.cause != "loss":
            continue
        seen = _loss_ratio(by_layer[layer], now, th.loss_window)
        for origin, charged in (("router", "link"), ("internet", "internet")):
            if origin == layer:
                break
            there = _loss_ratio(by_layer[origin], now, th.loss_window)
            if there >= th.loss_degraded and there >= 0.5 * seen:
                current = found[charged]
                if current is None or current.state == "ok":
                    found[charged] = degraded(charged, "loss", pct(there))
                break
    for layer in AGENCY_SIDE:
        finding = found[layer]
        if finding is None or finding.state != "degraded" or finding.cause not in QUALITY_CAUSES:
            continue
        rtt, jitter = _echo_quality(by_layer[layer], now, tu.recent)
        for origin in ("router", "internet"):
            before = found[origin]
            if before is None or before.state != "ok":
                continue
            up_rtt, up_jitter = _echo_quality(by_layer[origin], now, tu.recent)
            if up_rtt is not None and up_rtt >= th.rtt_degraded and up_rtt >= 0.5 * (rtt or 0.0):
                found[origin] = degraded(origin, "latency", f"RTT {ms(up_rtt)}")
                break
            if (
                up_jitter is not None
                and up_jitter >= th.jitter_degraded
                and up_jitter >= 0.5 * (jitter or 0.0)
            ):
                found[origin] = degraded(origin, "jitter", f"jitter {ms(up_jitter)}")
                break


def tunnel_receiving(counters: Counters, since: float, now: float, tu: Tuning) -> bool | None:
    """Whether the tunnel's peer sent data since ``since``, from the VPN's byte counters: True
    when the received bytes grew by more than handshakes and keepalives account for, False when
    they did not while sent bytes grew (for 2 s at least), None when the counters cannot say."""
    before = [c for c in counters if c[0] <= since]
    if not before or not counters:
        return None
    _, rx0, tx0 = before[-1]
    t1, rx1, tx1 = counters[-1]
    if rx1 < rx0 or tx1 < tx0 or now - t1 > tu.facts_stale:
        return None  # counters reset (the tunnel restarted) or no longer read
    if rx1 - rx0 > RX_CHATTER:
        return True
    return False if tx1 > tx0 and t1 - since >= 2.0 else None


def tunnel_silent(
    found: dict[str, LayerFinding | None],
    by_layer: ByLayer,
    now: float,
    vpn: VpnFacts | None,
    counters: Counters,
    tu: Tuning,
) -> LayerFinding | None:
    """The tunnel's own finding when a layer behind it is judged failed for silence.

    Silence of the agency network, DNS or CAD is theirs only when the tunnel demonstrably
    carries traffic: another target inside it answered since the silence began, a port refused
    (a refusal comes back through the tunnel), or the VPN's counters show data received. Else
    nothing comes back through the tunnel: the tunnel's failure when the evidence says so (the
    concentrator stopped answering at its public address; a probe of the tunnel's own far end;
    no reply and no new handshake for longer than WireGuard takes to retry one), otherwise the
    tunnel's or the first layer behind it — and the verdict names both.
    """
    behind = ("agency", "dns", "cad")
    first = next((b for b in behind if (f := found[b]) is not None and f.state == "failed"), None)
    if first is None or (found[first] or LayerFinding("ok", "")).reason == CAD_REFUSED:
        return None
    if any((f := found[b]) is not None and f.state == "failed" for b in HOME_SIDE):
        return None  # cut on the home side: the chain names it
    starts = [t for t in (s.failed_since() for s in by_layer[first] if not s.stale(now)) if t is not None]
    if not starts:
        return None
    since = min(starts)
    inside = [s for layer in AGENCY_SIDE for s in by_layer[layer] if not s.stale(now)]
    if any(s.answered_since(since) for s in inside):
        return None
    if any(r.reason in REFUSED for s in inside for r in s.since(since)):
        return None
    receiving = tunnel_receiving(counters, since, now, tu)
    if receiving:
        return None
    endpoint = [s for s in by_layer["endpoint"] if not s.stale(now) and s.last_answered() is not None]
    if endpoint and not any(s.answered_since(since) for s in endpoint):
        return LayerFinding(
            "failed",
            f"{FAILED_TEXT['vpn']} (the concentrator does not answer at its public address)",
            "down",
        )
    answers = " (the concentrator answers at its public address)" if endpoint else ""
    silent_for = now - since
    # WireGuard retries a handshake once it has heard nothing for 15 s while sending: a
    # concentrator that still serves the tunnel completes it, so none since says the tunnel.
    no_handshake = (
        receiving is False
        and silent_for >= 20.0
        and vpn is not None
        and vpn.handshake_age is not None
        and vpn.handshake_age >= silent_for
    )
    if no_handshake or any(not s.stale(now) for s in by_layer["vpn"]):
        return LayerFinding(
            "failed", f"{FAILED_TEXT['vpn']} — nothing comes back through it{answers}", "down"
        )
    probed = [b for b in behind if any(not s.stale(now) for s in by_layer[b])]
    other = "CAD server" if probed == ["cad"] else "agency network"
    return LayerFinding(
        "failed", f"VPN tunnel or {other} down — nothing comes back through the tunnel{answers}", "down"
    )


def judge_backup(
    series: list[TargetSeries], now: float, routes: RouteFacts | None, th: Thresholds, tu: Tuning, held: Held
) -> LayerFinding | None:
    """The backup path, judged as the primary is (the same holds) by what matters: whether it
    reaches beyond the hotspot. A hotspot that answers while nothing answers through it has no
    internet; one that answers nothing is off or out of reach."""
    live = [s for s in series if not s.stale(now)]
    near = [s for s in live if s.target.role in HOTSPOT_ROLES]
    far = [s for s in live if s.target.role not in HOTSPOT_ROLES]
    loss_since = back_at(live)
    finding = judge_probes("backup", far or near, now, th, tu, held, loss_since=loss_since)
    if finding is None or finding.state != "failed":
        return finding
    near_answers = any(s.last is not None and s.last.success for s in near)
    link_up = routes is not None and routes.backup_interface != "" and routes.backup_up is True
    if far and (near_answers or (not near and link_up)):
        return LayerFinding("failed", HOTSPOT_NO_INTERNET, "down")
    if near or far:
        return LayerFinding("failed", HOTSPOT_UNREACHABLE if near else FAILED_TEXT["backup"], "down")
    return finding


def infer_vpn(state: Mapping[str, str]) -> LayerFinding:
    """Home-VPN-router variant: judge the tunnel from what is reachable around it."""
    beyond = [state[layer] for layer in ("agency", "dns", "cad") if state[layer] != "unknown"]
    if not beyond:
        return LayerFinding("unknown", "not measured (no probe through the tunnel)")
    if all(s == "failed" for s in beyond):
        if state["internet"] == "ok":
            return LayerFinding("failed", VPN_INFERRED, "down")
        if state["internet"] == "unknown" and state["router"] == "ok":
            return LayerFinding("failed", "VPN tunnel or home internet down (home VPN router)", "down")
        return LayerFinding("unknown", "cannot tell: the way to the tunnel is down")
    # Anything answering beyond the tunnel proves the tunnel carries traffic.
    return LayerFinding("ok", "carries traffic (judged from the agency side)")


def pick_verdict(
    states: Mapping[str, LayerStatus], on_backup: bool, power_out: bool, power_cut: bool
) -> tuple[str, str, str]:
    """The verdict's layer, its sentence and its cause."""
    chain = [states[layer] for layer in CHAIN]
    failed = next((s for s in chain if s.state == "failed"), None)
    weak = next((s for s in chain if s.state == "degraded"), None)
    pick = failed or weak
    explains = False
    if failed is not None and weak is not None and CHAIN.index(weak.layer) < CHAIN.index(failed.layer):
        cause = weak.cause
        # Loss or a weak radio earlier on the way explains the failure further along; the home
        # power going out explains the home network, router and ISP link going with it.
        # (Power only while the laptop is on battery, or for what failed while it was: once
        # the mains are back, a layer that fails anew is its own story.)
        explains = cause in ("loss", "silent", "signal") or (
            cause == "power" and power_cut and failed.layer in HOME_SIDE
        )
        if explains:
            pick = weak
    if pick is None and states["backup"].state in ("failed", "degraded"):
        pick = states["backup"]
    if pick is None:
        if all(states[layer].state == "unknown" for layer in CAD_PATH):
            return "none", NO_DATA, "none"  # "no data" is never shown as "healthy"
        return "none", "healthy", "none"
    text = pick.reason
    if pick.state == "failed":
        # Nothing measured in front of the silent layer (no link, Wi-Fi or interface facts; no
        # probe of the router): its silence cannot be told from the layer before it going.
        if pick.layer == "router" and states["link"].state == "unknown" and text == FAILED_TEXT["router"]:
            text = "home network or home router down"
        elif (
            pick.layer == "internet"
            and states["router"].state == "unknown"
            and text == FAILED_TEXT["internet"]
        ):
            text = "home router or home internet (ISP) down"
        elif pick.layer == "internet" and states["router"].state == "ok":
            text = f"{text}, router fine"
        elif (
            pick.layer == "vpn"
            and text.startswith(FAILED_TEXT["vpn"])
            and "home VPN router" not in text
            and states["internet"].state == "ok"
        ):
            text = f"{text}, internet fine"
    if pick.layer == "power" and explains and failed is not None:
        text = f"{text}; {failed.reason}"
    if pick.layer == "backup":
        text = f"{text} — primary fine"
    if pick.layer != "power" and power_out:
        text = f"{text} — on battery, home power out"
    if on_backup and pick.layer in HOME_SIDE:
        text = f"{text} — running on the backup path"
    return pick.layer, text, pick.cause


def _loss_ratio(series: list[TargetSeries], now: float, window: float) -> float:
    live = [s for s in series if not s.stale(now)]
    view = loss_view(live, now - window)
    return view.ratio if view.sent else 0.0


def _echo_quality(series: list[TargetSeries], now: float, span: float) -> tuple[float | None, float | None]:
    """The worst recent RTT and jitter of a layer's echo probes."""
    live = [s for s in series if s.target.kind == "icmp" and not s.stale(now)]
    rtts = [r for r in (s.recent_rtt(now, span) for s in live) if r is not None]
    jitters = [j for j in (s.recent_jitter(now, span) for s in live) if j is not None]
    return max(rtts, default=None), max(jitters, default=None)
