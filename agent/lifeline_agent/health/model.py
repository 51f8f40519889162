"""The health model: every layer's state, the verdict, backup readiness, risk and time to loss.

Pure decision logic: it is fed probe results and local facts, asked to :meth:`HealthModel.evaluate`
once a second, and reads time only from the injected clock (monotonic time for every duration,
wall time for the timestamps that leave the agent). No I/O, no sleeping, so tests move time.

::

    model = HealthModel(config.thresholds, clock, position="12")
    runner.subscribe(lambda target, result, _state: model.observe_probe(target, result))
    model.observe_facts("power", reading.facts)  # power, wifi, cellular, vpn, routes, interfaces
    assessment = model.evaluate()                # 1 Hz
    batch_events = model.events()                # state changes since the last call
    batch_samples = model.samples()              # catalog series of the last assessment
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import TypeVar

from lifeline_agent.clock import Clock
from lifeline_agent.config import Target, Thresholds
from lifeline_agent.health.assessment import NO_DATA, Assessment, LayerStatus, PathScore, ProbeOutcome
from lifeline_agent.health.events import LayerChange, change_events, state_samples
from lifeline_agent.health.facts import Facts, RouteFacts, SessionFacts, VpnFacts, coerce
from lifeline_agent.health.hysteresis import BandTracker, Held, Hysteresis
from lifeline_agent.health.layers import (
    CAD_REFUSED,
    HOTSPOT_NO_INTERNET,
    HOTSPOT_ROLES,
    HOTSPOT_UNREACHABLE,
    VPN_INFERRED,
    Finding,
    Tuning,
    all_failing,
    degraded,
    judge_backup_facts,
    judge_link,
    judge_power,
    judge_probes,
    judge_vpn,
    overdue_margin,
    target_layer,
    worst,
)
from lifeline_agent.health.render import local_warning
from lifeline_agent.health.risk import RiskInputs, assess
from lifeline_agent.health.series import REFUSED, Round, TargetSeries, loss_view
from lifeline_agent.sources.cellular import CellularFacts
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.wifi import WifiFacts
from lifeline_wire.layers import (
    AGENCY_SIDE,
    CAD_PATH,
    CHAIN,
    FAILED_TEXT,
    HOME_SIDE,
    LAYERS,
    QUALITY_CAUSES,
    ms,
    pct,
)
from lifeline_wire.schema import Event, Sample

F = TypeVar("F")
# Bytes a silent tunnel's peer still sends now and then (a handshake response is 92, a keepalive
# 32): received bytes growing by more than this since a silence began mean data came back.
RX_CHATTER = 256
# Silence behind a layer ahead that still answers, with at least this share of its packets lost
# since the silence began, is loss (the burst eats every probe of a round or two), not an outage …
LOSSY_AHEAD = 0.2


class HealthModel:
    def __init__(
        self, thresholds: Thresholds, clock: Clock, position: str = "", tuning: Tuning | None = None
    ) -> None:
        self.thresholds = thresholds
        self.clock = clock
        self.position = position
        self.tuning = tuning or Tuning()
        self._keep = max(thresholds.loss_window, self.tuning.trend_window, self.tuning.recent) + 5.0
        self._series: dict[str, TargetSeries] = {}
        self._facts: dict[str, tuple[float, Facts]] = {}
        self._wifi_history: deque[tuple[float, float]] = deque()
        self._held = Held()
        self._power_out_at: float | None = None  # the last time the laptop was on battery
        self._on_backup = False  # at the last evaluation
        self._failed_back_at: float | None = None  # when traffic last moved from the backup back home
        self._upstream_failing: dict[str, float] = {}  # layer → last time a layer before it was failing
        # (monotonic time, bytes received, bytes sent) of the VPN's counters, when it exposes them
        self._counters: deque[tuple[float, float, float]] = deque()
        start = clock.monotonic()
        self._trackers = {layer: Hysteresis(since=start) for layer in LAYERS}
        self._band = BandTracker(self.tuning.bands)
        self._events: list[Event] = []
        self._last: Assessment | None = None

    # --- input -------------------------------------------------------------------------------

    def observe_probe(self, target: Target, result: ProbeOutcome) -> None:
        """Record one probe round (called for every round of every target)."""
        series = self._series.get(target.name)
        if series is None or series.target != target:
            series = self._series[target.name] = TargetSeries(target, self._keep)
        sent = max(0, result.sent)
        received = min(max(0, result.received), sent)
        lost = sent - received
        if result.reason in REFUSED:
            lost = 0  # a refusal is an answer: the packets got there and back
        if sent == 0 and not result.success:
            sent, lost = 1, 1  # a round that could not even send lost what it meant to send
        now = self.clock.monotonic()
        duration = getattr(result, "duration", 0.0)
        series.add(
            Round(
                t=now,
                started=now - duration if isinstance(duration, int | float) and duration > 0 else None,
                success=result.success,
                reason=result.reason,
                sent=sent,
                lost=lost,
                rtt=result.rtt_avg,
                jitter=result.jitter,
            )
        )

    def forget_target(self, name: str) -> None:
        """Drop a target that left the config or discovery (its layer must not wait on it)."""
        self._series.pop(name, None)

    def observe_facts(self, source: str, facts: object) -> tuple[str, ...]:
        """Record the latest facts of a local source; returns the problems found in them.

        ``source`` is one of power, wifi, cellular, vpn, routes, interfaces. ``facts`` is the record from
        :mod:`lifeline_agent.health.facts` or any object or mapping with the same field names.
        A bad field is dropped and named in the returned problems; the rest is kept.
        """
        record, problems = coerce(source, facts)
        if record is None:
            return problems
        now = self.clock.monotonic()
        self._facts[source] = (now, record)
        if isinstance(record, WifiFacts) and record.path != "backup":
            if record.connected and record.signal_dbm is not None and math.isfinite(record.signal_dbm):
                self._wifi_history.append((now, record.signal_dbm))
            while self._wifi_history and self._wifi_history[0][0] < now - self.tuning.trend_window:
                self._wifi_history.popleft()
        if isinstance(record, VpnFacts) and record.rx_bytes is not None and record.tx_bytes is not None:
            self._counters.append((now, record.rx_bytes, record.tx_bytes))
            while len(self._counters) > 2 and self._counters[1][0] < now - self._keep:
                self._counters.popleft()
        return problems

    def next_check(self) -> float | None:
        """When (monotonic) a failing target's next round becomes overdue, so an evaluation then
        can see a cut before that round's timeout; None while nothing is still to become overdue
        (a round already overdue was counted by the evaluation that asks)."""
        now = self.clock.monotonic()
        times = []
        for s in self._series.values():
            at = None if s.stale(now) else s.overdue_at(overdue_margin(s, now, self.tuning))
            if at is not None and at + 0.01 > now:
                times.append(at + 0.01)
        return min(times, default=None)

    # --- output ------------------------------------------------------------------------------

    @property
    def last(self) -> Assessment | None:
        return self._last

    def events(self) -> list[Event]:
        """State changes since the last call (layer, verdict, risk band), oldest first."""
        out, self._events = self._events, []
        return out

    def samples(self, include_mos: bool = True) -> list[Sample]:
        """The catalog series of the last assessment (empty before the first evaluation)."""
        return [] if self._last is None else state_samples(self._last, include_mos)

    def evaluate(self) -> Assessment:
        th, tu, held = self.thresholds, self.tuning, self._held
        now, wall = self.clock.monotonic(), self.clock.time()
        by_layer: dict[str, list[TargetSeries]] = {layer: [] for layer in LAYERS}
        for series in self._series.values():
            by_layer.setdefault(target_layer(series.target), []).append(series)
        # A VPN target probed outside the tunnel is the concentrator's public address: its answers
        # say the internet reaches the concentrator, not that the tunnel carries anything.
        by_layer["endpoint"] = [s for s in by_layer["vpn"] if s.target.path == "primary"]
        by_layer["vpn"] = [s for s in by_layer["vpn"] if s.target.path != "primary"]

        power = self._fact("power", PowerFacts, now)
        wifi = self._fact("wifi", WifiFacts, now)
        cellular = self._fact("cellular", CellularFacts, now)
        vpn = self._fact("vpn", VpnFacts, now)
        routes = _merge_links(
            self._fact("routes", RouteFacts, now), self._fact("interfaces", RouteFacts, now)
        )
        tunnel_ok = any(
            s.last is not None and s.last.success and s.last.t >= now - tu.recent
            for layer in AGENCY_SIDE
            for s in by_layer[layer]
        )

        on_backup = routes is not None and routes.on_backup
        if self._on_backup and not on_backup:
            self._failed_back_at = now
        self._on_backup = on_backup
        # The home side failed while the backup carried the position, and the system has just
        # moved traffic back: it answers again, so it recovers without the hold (the hold is for
        # one good round in the middle of an outage; here the outage was not carrying CAD).
        failed_back = self._failed_back_at is not None and now - self._failed_back_at <= 2 * tu.recover_hold
        probes = self._judge_layers(by_layer, now, on_backup, routes)
        raw: dict[str, Finding | None] = {
            "power": worst(judge_power(power, now, th, tu, held), probes["power"]),
            "link": worst(judge_link(wifi, routes, now, th, tu, held), probes["link"]),
            "vpn": worst(judge_vpn(vpn, tunnel_ok, th), probes["vpn"]),
            "backup": worst(judge_backup_facts(cellular, wifi, routes, th), probes["backup"]),
        }
        if raw["vpn"] is not None and not on_backup:
            raw["vpn"] = worst(raw["vpn"], self._tunnel_silent(probes, by_layer, now, vpn))
        if power is not None and power.on_ac is False and raw["power"] is not None:
            home_down = routes is not None and routes.primary_up is False
            home_down = home_down or any(all_failing(by_layer[layer], now) for layer in HOME_SIDE)
            if raw["power"].state == "ok" and home_down:
                # Unplugged at the moment the home network went: the mains are out, not the cable.
                raw["power"] = Finding("degraded", "on battery — home power out", "power")
        if power is not None and power.on_ac is False:
            self._power_out_at = now
        elif raw["power"] is not None and raw["power"].state == "ok" and self._cut_by_power():
            # The mains are back but the router is still booting: what it took down is still the
            # power cut's doing, not a new failure of its own (and not worth a second page).
            raw["power"] = Finding("degraded", "home power back, the home network still coming up", "power")
        changes: list[LayerChange] = []
        released = False  # a failed layer on the way has served its recovery hold just now
        for layer in LAYERS:
            if layer == "vpn" and raw["vpn"] is None:
                continue  # no evidence of its own: inferred below from the layers around it
            finding = raw.get(layer, probes[layer]) or Finding("unknown", "not measured")
            tracker = self._trackers[layer]
            previous = tracker.state
            # A failed layer that answers again recovers without the hold when it went down with
            # the layer ahead (it recovers with it, not a round later as the verdict: "CAD server
            # not answering" for half a second), or when it is the home side and traffic has just
            # moved back from the hotspot (not "home network down" for the hold).
            answering = previous == "failed" and finding.state in ("ok", "degraded")
            at_once = answering and ((released and layer in CAD_PATH) or (failed_back and layer in HOME_SIDE))
            hold = 0.0 if at_once else tu.recover_hold
            if tracker.update(finding.state, finding.reason, now, hold, finding.cause):
                changes.append((layer, previous, tracker.state))
                if layer in CAD_PATH and previous == "failed" and tracker.state != "failed":
                    released = True
        inferred = raw["vpn"] is None
        if inferred:
            finding = self._infer_vpn()
            previous = self._trackers["vpn"].state
            if self._trackers["vpn"].update(finding.state, finding.reason, now, 0.0, finding.cause):
                changes.append(("vpn", previous, finding.state))

        statuses = tuple(
            LayerStatus(layer, tr.state, tr.reason, wall - (now - tr.since), tr.cause)
            for layer, tr in self._trackers.items()
        )
        states = {s.layer: s for s in statuses}
        power_out = power is not None and power.on_ac is False
        power_cut = power_out or self._cut_by_power()
        verdict_layer, verdict, verdict_cause = self._verdict(states, on_backup, power_out, power_cut)

        backup_series = [s for s in by_layer["backup"] if not s.stale(now)]
        backup_state = states["backup"].state
        backup_ready = None if backup_state == "unknown" else backup_state != "failed"
        rtts = [r for r in (s.recent_rtt(now, tu.recent) for s in backup_series) if r is not None]
        backup_loss = (
            loss_view(backup_series, max(now - th.loss_window, _back_at(backup_series)))
            if backup_series
            else None
        )

        first_failed = next((s for s in statuses if s.layer in CAD_PATH and s.state == "failed"), None)
        failed_layer = first_failed.layer if first_failed else ""
        failed_since = now - (wall - first_failed.since) if first_failed else now
        path = self._path_series(by_layer, now)
        part = assess(
            RiskInputs(
                now=now,
                path=path,
                failed_layer=failed_layer,
                # The verdict names the failed layer or the loss upstream that explains it.
                failed_text=verdict if verdict_layer in CAD_PATH else FAILED_TEXT.get(failed_layer, ""),
                failed_for=now - failed_since + tu.fail_hold,
                power=power,
                vpn=vpn,
                tunnel_ok=tunnel_ok,
                wifi=wifi,
                wifi_history=tuple(self._wifi_history),
                cellular=cellular,
                on_backup=on_backup,
                home=[] if on_backup else self._home_series(by_layer, now, path),
                session=self._fresh_session(now),
            ),
            th,
            tu,
            held,
        )
        previous_band = self._band.band
        band_changed = self._band.update(part.risk, now, tu.recover_hold)
        if verdict_layer == "none" and verdict == "healthy" and self._band.band in ("warn", "page"):
            # No layer has crossed its threshold yet, but the trend says CAD is at risk: say why
            # ("packet loss on the path to CAD rising") rather than "healthy".
            verdict, verdict_cause = part.reason, "trend"

        scores = tuple(
            PathScore(s.target, m)
            for s in self._series.values()
            if s.target.kind in ("icmp", "tcp") and not s.stale(now)
            for m in [s.mos(now, tu.recent, th.loss_window)]
            if m is not None
        )
        assessment = Assessment(
            at=wall,
            position=self.position,
            layers=statuses,
            verdict=verdict,
            verdict_layer=verdict_layer,
            verdict_state=(
                states[verdict_layer].state
                if verdict_layer != "none"
                else ("unknown" if verdict == NO_DATA else "ok")
            ),
            backup_ready=backup_ready,
            backup_rtt=min(rtts) if rtts else None,
            backup_loss=backup_loss.ratio if backup_loss and backup_loss.sent else None,
            backup_reason=states["backup"].reason,
            on_backup=on_backup,
            risk=round(part.risk, 4),
            risk_band=self._band.band,
            time_to_loss=part.ttl,
            risk_reason=part.reason,
            vpn_inferred=inferred,
            mos=scores,
            verdict_cause=verdict_cause,
        )
        assessment = _with_warning(assessment)
        self._events += change_events(
            assessment, self._last, changes, previous_band if band_changed else None
        )
        self._last = assessment
        return assessment

    # --- internals ---------------------------------------------------------------------------

    def _judge_layers(
        self,
        by_layer: dict[str, list[TargetSeries]],
        now: float,
        on_backup: bool,
        routes: RouteFacts | None = None,
    ) -> dict[str, Finding | None]:
        """Each layer's finding from its probes, walking the chain from the laptop outwards.

        A packet to CAD crosses every layer in turn, so when a layer's probes start failing, every
        layer behind it fails too, each at the moment its own probes happen to time out. While a
        layer's probes are all failing but it is not yet judged failed, the layers behind it wait:
        their failures count only from the moment it recovers, so the verdict names the layer that
        broke, never one a round further along that merely timed out first.
        """
        th, tu, held = self.thresholds, self.tuning, self._held
        found: dict[str, Finding | None] = {}
        waiting = False  # a layer further up is failing and not (yet) judged failed
        explained = False  # a layer further up is failed: failures behind it are its echo
        recovered: float | None = None  # a failed layer further up answers again since then
        for layer in LAYERS:
            not_before = None
            if layer in CAD_PATH:
                if explained:
                    self._upstream_failing.pop(layer, None)
                elif waiting:
                    self._upstream_failing[layer] = now
                elif recovered is not None:
                    # The layers behind it come back one probe round after another: a failure of
                    # theirs counts only from the moment the layer ahead answered again.
                    self._upstream_failing[layer] = max(
                        self._upstream_failing.get(layer, recovered), recovered
                    )
                not_before = self._upstream_failing.get(layer)
            if layer == "backup":
                found[layer] = self._judge_backup(by_layer[layer], now, routes)
                continue
            crossing = self._crossing(layer, by_layer, on_backup) if layer in CAD_PATH else []
            found[layer] = judge_probes(layer, by_layer[layer], now, th, tu, held, not_before, crossing)
            if layer not in CAD_PATH:
                continue
            finding = found[layer]
            if finding is not None and finding.cause == "down" and not on_backup:
                finding = found[layer] = self._unless_traffic_passes(layer, finding, by_layer, now)
            if finding is not None and finding.cause == "down" and not on_backup:
                finding = found[layer] = self._unless_lossy_ahead(layer, finding, by_layer, now)
            if finding is not None and finding.state == "failed":
                explained = True
            elif all_failing(by_layer[layer], now) and self._recently_failing(by_layer[layer], now):
                waiting = True
            elif finding is not None and self._trackers[layer].state == "failed" and layer != "dns":
                # Its own probes answer again (a layer judged from facts alone, such as a link
                # without carrier, has none: it says nothing about the probes behind it; DNS is a
                # side branch).
                since = self._trackers[layer].better_since
                recovered = max(recovered or -math.inf, now if since is None else since)
        if not on_backup:
            self._dns_lost_with_the_path(found, by_layer, now)
        self._home_side_attribution(found, by_layer, now)
        return found

    def _dns_lost_with_the_path(
        self, found: dict[str, Finding | None], by_layer: dict[str, list[TargetSeries]], now: float
    ) -> None:
        """A resolver that misses a few queries in a row while the path to it loses packets is
        losing packets, not down.

        A DNS probe is one query a round: under 20 % round-trip loss three rounds in a row are lost
        every minute or so, while the multi-echo probes on the same way merely lose some echoes. So
        until the silence is long (the critical number of rounds), it is charged to the loss: to
        the first layer on the way that loses packets, else to DNS as loss.
        """
        th = self.thresholds
        finding = found["dns"]
        if finding is None or not (finding.cause == "silent" or finding.state == "failed"):
            return
        live = [s for s in by_layer["dns"] if not s.stale(now)]
        if not live or max(s.streak for s in live) >= th.lost_probes_critical:
            return
        # Loss on the way lately: any echo lost by the probes that share the way to the agency.
        # (An outage further up is not loss: the silence is its echo, and the chain says so.)
        start = now - self.tuning.recent
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

    @staticmethod
    def _crossing(layer: str, by_layer: dict[str, list[TargetSeries]], on_backup: bool) -> list[TargetSeries]:
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

    def _unless_traffic_passes(
        self, layer: str, finding: Finding, by_layer: dict[str, list[TargetSeries]], now: float
    ) -> Finding:
        """A layer is not down while probes that cross it get answers: its own probes missed a run
        of rounds to loss (bursts on the home Wi-Fi), which is "losing packets", not "failed"."""
        if finding.reason == CAD_REFUSED:
            return finding  # the CAD port said no: that is an answer, not silence
        live = [s for s in by_layer[layer] if not s.stale(now)]
        starts = [t for t in (s.failed_since() for s in live) if t is not None]
        if not starts:
            return finding
        since = min(starts)
        crossing = self._crossing(layer, by_layer, on_backup=False)
        if not any(s.answered_since(since) for s in crossing):
            return finding
        loss = loss_view(live, now - self.thresholds.loss_window)
        return degraded(layer, "loss", pct(loss.ratio))

    def _unless_lossy_ahead(
        self, layer: str, finding: Finding, by_layer: dict[str, list[TargetSeries]], now: float
    ) -> Finding:
        """Silence behind layers that keep answering but lose a good share of their packets is a
        loss burst eating every probe of a round or two, not an outage — until it has lasted as
        long as a CAD session survives silence (``Tuning.cad_outage_dead``): a 4 s burst of 40 %
        loss each way is ridden out, a path dying under loss is not."""
        if finding.reason == CAD_REFUSED:
            return finding
        live = [s for s in by_layer[layer] if not s.stale(now)]
        starts = [t for t in (s.failed_since() for s in live) if t is not None]
        if not starts or now - min(starts) >= self.tuning.cad_outage_dead:
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
        loss = loss_view(live, now - self.thresholds.loss_window)
        return degraded(layer, "loss", pct(loss.ratio))

    def _tunnel_receiving(self, since: float, now: float) -> bool | None:
        """Whether the tunnel's peer sent data since ``since``, from the VPN's byte counters: True
        when the received bytes grew by more than handshakes and keepalives account for, False when
        they did not while sent bytes grew (for 2 s at least), None when the counters cannot say."""
        before = [c for c in self._counters if c[0] <= since]
        if not before or not self._counters:
            return None
        _, rx0, tx0 = before[-1]
        t1, rx1, tx1 = self._counters[-1]
        if rx1 < rx0 or tx1 < tx0 or now - t1 > self.tuning.facts_stale:
            return None  # counters reset (the tunnel restarted) or no longer read
        if rx1 - rx0 > RX_CHATTER:
            return True
        return False if tx1 > tx0 and t1 - since >= 2.0 else None

    def _tunnel_silent(
        self,
        found: dict[str, Finding | None],
        by_layer: dict[str, list[TargetSeries]],
        now: float,
        vpn: VpnFacts | None,
    ) -> Finding | None:
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
        if first is None or (found[first] or Finding("ok", "")).reason == CAD_REFUSED:
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
        receiving = self._tunnel_receiving(since, now)
        if receiving:
            return None
        endpoint = [s for s in by_layer["endpoint"] if not s.stale(now) and s.last_answered() is not None]
        if endpoint and not any(s.answered_since(since) for s in endpoint):
            return Finding(
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
            return Finding("failed", f"{FAILED_TEXT['vpn']} — nothing comes back through it{answers}", "down")
        probed = [b for b in behind if any(not s.stale(now) for s in by_layer[b])]
        other = "CAD server" if probed == ["cad"] else "agency network"
        return Finding(
            "failed", f"VPN tunnel or {other} down — nothing comes back through the tunnel{answers}", "down"
        )

    def _judge_backup(
        self, series: list[TargetSeries], now: float, routes: RouteFacts | None
    ) -> Finding | None:
        """The backup path, judged as the primary is (the same holds) by what matters: whether it
        reaches beyond the hotspot. A hotspot that answers while nothing answers through it has no
        internet; one that answers nothing is off or out of reach."""
        th, tu, held = self.thresholds, self.tuning, self._held
        live = [s for s in series if not s.stale(now)]
        near = [s for s in live if s.target.role in HOTSPOT_ROLES]
        far = [s for s in live if s.target.role not in HOTSPOT_ROLES]
        loss_since = _back_at(live)
        finding = judge_probes("backup", far or near, now, th, tu, held, loss_since=loss_since)
        if finding is None or finding.state != "failed":
            return finding
        near_answers = any(s.last is not None and s.last.success for s in near)
        link_up = routes is not None and routes.backup_interface != "" and routes.backup_up is True
        if far and (near_answers or (not near and link_up)):
            return Finding("failed", HOTSPOT_NO_INTERNET, "down")
        if near or far:
            return Finding("failed", HOTSPOT_UNREACHABLE if near else FAILED_TEXT["backup"], "down")
        return finding

    def _cut_by_power(self) -> bool:
        """A layer of the home side failed while the mains were out and has not come back yet."""
        out_at = self._power_out_at
        return out_at is not None and any(
            self._trackers[layer].state == "failed" and self._trackers[layer].since <= out_at
            for layer in HOME_SIDE
        )

    def _recently_failing(self, series: list[TargetSeries], now: float) -> bool:
        """A layer's probes started failing lately (an older failure that never reached the fail
        hold — a slow probe interval — must not hold the layers behind it forever)."""
        live = [s for s in series if not s.stale(now)]
        limit = self.tuning.fail_hold + max((s.target.interval for s in live), default=1.0) + 1.0
        return min(s.failing_for(now) for s in live) < limit

    def _home_side_attribution(
        self, found: dict[str, Finding | None], by_layer: dict[str, list[TargetSeries]], now: float
    ) -> None:
        """Charge trouble to the layer where it starts, not to every layer that sees it.

        - Partial loss to the home router (the first hop) is the home network's: Wi-Fi or the cable
          drops packets; a router that fails stops answering altogether (that stays the router's).
        - Loss seen further along that the router or ISP probes see too (at least half as much)
          started there: a spike on the home Wi-Fi reaches every probe behind it.
        - Delay or jitter seen beyond the home (VPN, agency, CAD) that the router or the ISP probes
          already show is theirs: a saturated uplink slows the tunnel, the tunnel did not slow down.
        """
        th, tu = self.thresholds, self.tuning
        router = found["router"]
        if router is not None and router.state == "degraded" and router.cause == "loss":
            found["link"] = worst(found["link"], degraded("link", "loss", router.figure))
            found["router"] = Finding("ok", "answering (the loss is on the way to it)")
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

    def _fact(self, source: str, kind: type[F], now: float) -> F | None:
        entry = self._facts.get(source)
        if entry is None or now - entry[0] > self.tuning.facts_stale:
            return None
        record = entry[1]
        return record if isinstance(record, kind) else None

    def _infer_vpn(self) -> Finding:
        """Home-VPN-router variant: judge the tunnel from what is reachable around it."""
        state = {layer: tr.state for layer, tr in self._trackers.items()}
        beyond = [state[layer] for layer in ("agency", "dns", "cad") if state[layer] != "unknown"]
        if not beyond:
            return Finding("unknown", "not measured (no probe through the tunnel)")
        if all(s == "failed" for s in beyond):
            if state["internet"] == "ok":
                return Finding("failed", VPN_INFERRED, "down")
            if state["internet"] == "unknown" and state["router"] == "ok":
                return Finding("failed", "VPN tunnel or home internet down (home VPN router)", "down")
            return Finding("unknown", "cannot tell: the way to the tunnel is down")
        # Anything answering beyond the tunnel proves the tunnel carries traffic.
        return Finding("ok", "carries traffic (judged from the agency side)")

    def _verdict(
        self, states: dict[str, LayerStatus], on_backup: bool, power_out: bool, power_cut: bool
    ) -> tuple[str, str, str]:
        """The verdict's layer, its sentence and its cause."""
        chain = [states[layer] for layer in CHAIN]
        failed = next((s for s in chain if s.state == "failed"), None)
        degraded = next((s for s in chain if s.state == "degraded"), None)
        pick = failed or degraded
        explains = False
        if (
            failed is not None
            and degraded is not None
            and CHAIN.index(degraded.layer) < CHAIN.index(failed.layer)
        ):
            cause = self._trackers[degraded.layer].cause
            # Loss or a weak radio earlier on the way explains the failure further along; the home
            # power going out explains the home network, router and ISP link going with it.
            # (Power only while the laptop is on battery, or for what failed while it was: once
            # the mains are back, a layer that fails anew is its own story.)
            explains = cause in ("loss", "silent", "signal") or (
                cause == "power" and power_cut and failed.layer in HOME_SIDE
            )
            if explains:
                pick = degraded
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

    def _fresh_session(self, now: float) -> SessionFacts | None:
        entry = self._facts.get("cad_sessions")
        if entry is None or now - entry[0] > self.tuning.session_fresh:
            return None
        return entry[1] if isinstance(entry[1], SessionFacts) else None

    @staticmethod
    def _home_series(
        by_layer: dict[str, list[TargetSeries]], now: float, path: list[TargetSeries]
    ) -> list[TargetSeries]:
        """The echo probes of the home side on the primary path, unless they are the path."""
        return [
            s
            for layer in ("router", "internet")
            for s in by_layer[layer]
            if s.target.kind == "icmp" and s.target.path != "backup" and not s.stale(now) and s not in path
        ]

    def _path_series(self, by_layer: dict[str, list[TargetSeries]], now: float) -> list[TargetSeries]:
        """The targets whose probes travel the way CAD traffic does: the deepest layers probed."""
        for group in (("vpn", "agency", "cad"), ("dns",), ("internet", "router")):
            found = [s for layer in group for s in by_layer[layer] if not s.stale(now)]
            if found:
                return found
        return []


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


def _back_at(series: list[TargetSeries]) -> float:
    """When the last of these targets answered again after an outage (-inf: none did)."""
    return max((s.back_at for s in series if s.back_at is not None), default=-math.inf)


def _with_warning(a: Assessment) -> Assessment:
    return replace(a, warning=local_warning(a))


def _merge_links(routes: RouteFacts | None, interfaces: RouteFacts | None) -> RouteFacts | None:
    """Routes say which path carries CAD; interface states say whether each path's link is up."""
    if routes is None or interfaces is None:
        return routes or interfaces
    return RouteFacts(
        primary_interface=routes.primary_interface or interfaces.primary_interface,
        primary_up=interfaces.primary_up if interfaces.primary_up is not None else routes.primary_up,
        backup_interface=routes.backup_interface or interfaces.backup_interface,
        backup_up=interfaces.backup_up if interfaces.backup_up is not None else routes.backup_up,
        on_backup=routes.on_backup,
    )
