"""The health model: every layer's state, the verdict, backup readiness, risk and time to loss.

Pure decision logic: it is fed probe results and local facts, asked to :meth:`HealthModel.evaluate`
once a second, and reads time only from the injected clock (monotonic time for every duration,
wall time for the timestamps that leave the agent). No I/O, no sleeping, so tests move time.
The model holds what persists between evaluations (series, facts, each layer's hysteresis, the
risk band); the records it returns are in :mod:`~lifeline_agent.health.assessment`, the rules that
charge a symptom to a layer and name the verdict in :mod:`~lifeline_agent.health.attribution`,
and the events and samples made of an assessment in :mod:`~lifeline_agent.health.events`.

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
from lifeline_agent.health.attribution import (
    ByLayer,
    dns_lost_with_the_path,
    home_side_attribution,
    infer_vpn,
    judge_backup,
    pick_verdict,
    probes_crossing,
    recently_failing,
    tunnel_silent,
    unless_lossy_ahead,
    unless_traffic_passes,
)
from lifeline_agent.health.events import LayerChange, change_events, state_samples
from lifeline_agent.health.facts import Facts, RouteFacts, SessionFacts, VpnFacts, coerce
from lifeline_agent.health.hysteresis import BandTracker, Held, Hysteresis
from lifeline_agent.health.layers import (
    LayerFinding,
    Tuning,
    all_failing,
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
from lifeline_agent.health.series import REFUSED, Round, TargetSeries, back_at, loss_view
from lifeline_agent.sources.cellular import CellularFacts
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.wifi import WifiFacts
from lifeline_wire.layers import AGENCY_SIDE, CAD_PATH, FAILED_TEXT, HOME_SIDE, LAYERS
from lifeline_wire.schema import Event, Sample

F = TypeVar("F")


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
        by_layer: ByLayer = {layer: [] for layer in LAYERS}
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
        raw: dict[str, LayerFinding | None] = {
            "power": worst(judge_power(power, now, th, tu, held), probes["power"]),
            "link": worst(judge_link(wifi, routes, now, th, tu, held), probes["link"]),
            "vpn": worst(judge_vpn(vpn, tunnel_ok, th), probes["vpn"]),
            "backup": worst(judge_backup_facts(cellular, wifi, routes, th), probes["backup"]),
        }
        if raw["vpn"] is not None and not on_backup:
            raw["vpn"] = worst(raw["vpn"], tunnel_silent(probes, by_layer, now, vpn, self._counters, tu))
        if power is not None and power.on_ac is False and raw["power"] is not None:
            home_down = routes is not None and routes.primary_up is False
            home_down = home_down or any(all_failing(by_layer[layer], now) for layer in HOME_SIDE)
            if raw["power"].state == "ok" and home_down:
                # Unplugged at the moment the home network went: the mains are out, not the cable.
                raw["power"] = LayerFinding("degraded", "on battery — home power out", "power")
        if power is not None and power.on_ac is False:
            self._power_out_at = now
        elif raw["power"] is not None and raw["power"].state == "ok" and self._cut_by_power():
            # The mains are back but the router is still booting: what it took down is still the
            # power cut's doing, not a new failure of its own (and not worth a second page).
            raw["power"] = LayerFinding(
                "degraded", "home power back, the home network still coming up", "power"
            )
        changes: list[LayerChange] = []
        released = False  # a failed layer on the way has served its recovery hold just now
        for layer in LAYERS:
            if layer == "vpn" and raw["vpn"] is None:
                continue  # no evidence of its own: inferred below from the layers around it
            finding = raw.get(layer, probes[layer]) or LayerFinding("unknown", "not measured")
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
            finding = infer_vpn({layer: tr.state for layer, tr in self._trackers.items()})
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
        verdict_layer, verdict, verdict_cause = pick_verdict(states, on_backup, power_out, power_cut)

        backup_series = [s for s in by_layer["backup"] if not s.stale(now)]
        backup_state = states["backup"].state
        backup_ready = None if backup_state == "unknown" else backup_state != "failed"
        rtts = [r for r in (s.recent_rtt(now, tu.recent) for s in backup_series) if r is not None]
        backup_loss = (
            loss_view(backup_series, max(now - th.loss_window, back_at(backup_series)))
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
        by_layer: ByLayer,
        now: float,
        on_backup: bool,
        routes: RouteFacts | None = None,
    ) -> dict[str, LayerFinding | None]:
        """Each layer's finding from its probes, walking the chain from the laptop outwards.

        A packet to CAD crosses every layer in turn, so when a layer's probes start failing, every
        layer behind it fails too, each at the moment its own probes happen to time out. While a
        layer's probes are all failing but it is not yet judged failed, the layers behind it wait:
        their failures count only from the moment it recovers, so the verdict names the layer that
        broke, never one a round further along that merely timed out first.
        """
        th, tu, held = self.thresholds, self.tuning, self._held
        found: dict[str, LayerFinding | None] = {}
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
                found[layer] = judge_backup(by_layer[layer], now, routes, th, tu, held)
                continue
            crossing = probes_crossing(layer, by_layer, on_backup) if layer in CAD_PATH else []
            found[layer] = judge_probes(layer, by_layer[layer], now, th, tu, held, not_before, crossing)
            if layer not in CAD_PATH:
                continue
            finding = found[layer]
            if finding is not None and finding.cause == "down" and not on_backup:
                finding = found[layer] = unless_traffic_passes(layer, finding, by_layer, now, th)
            if finding is not None and finding.cause == "down" and not on_backup:
                finding = found[layer] = unless_lossy_ahead(layer, finding, by_layer, now, th, tu)
            if finding is not None and finding.state == "failed":
                explained = True
            elif all_failing(by_layer[layer], now) and recently_failing(by_layer[layer], now, tu):
                waiting = True
            elif finding is not None and self._trackers[layer].state == "failed" and layer != "dns":
                # Its own probes answer again (a layer judged from facts alone, such as a link
                # without carrier, has none: it says nothing about the probes behind it; DNS is a
                # side branch).
                since = self._trackers[layer].better_since
                recovered = max(recovered or -math.inf, now if since is None else since)
        if not on_backup:
            dns_lost_with_the_path(found, by_layer, now, th, tu)
        home_side_attribution(found, by_layer, now, th, tu)
        return found

    def _cut_by_power(self) -> bool:
        """A layer of the home side failed while the mains were out and has not come back yet."""
        out_at = self._power_out_at
        return out_at is not None and any(
            self._trackers[layer].state == "failed" and self._trackers[layer].since <= out_at
            for layer in HOME_SIDE
        )

    def _fact(self, source: str, kind: type[F], now: float) -> F | None:
        entry = self._facts.get(source)
        if entry is None or now - entry[0] > self.tuning.facts_stale:
            return None
        record = entry[1]
        return record if isinstance(record, kind) else None

    def _fresh_session(self, now: float) -> SessionFacts | None:
        entry = self._facts.get("cad_sessions")
        if entry is None or now - entry[0] > self.tuning.session_fresh:
            return None
        return entry[1] if isinstance(entry[1], SessionFacts) else None

    @staticmethod
    def _home_series(by_layer: ByLayer, now: float, path: list[TargetSeries]) -> list[TargetSeries]:
        """The echo probes of the home side on the primary path, unless they are the path."""
        return [
            s
            for layer in ("router", "internet")
            for s in by_layer[layer]
            if s.target.kind == "icmp" and s.target.path != "backup" and not s.stale(now) and s not in path
        ]

    def _path_series(self, by_layer: ByLayer, now: float) -> list[TargetSeries]:
        """The targets whose probes travel the way CAD traffic does: the deepest layers probed."""
        for group in (("vpn", "agency", "cad"), ("dns",), ("internet", "router")):
            found = [s for layer in group for s in by_layer[layer] if not s.stale(now)]
            if found:
                return found
        return []


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
