"""One outage, one incident: everything a position's rules find while it is paged goes to that page.

The first critical per-position alert that fires (the prediction, the silence, a failed layer, a
CAD target) opens the position's *outage* and is its *lead*. While the outage is open, the other
critical findings of the position are folded into the lead instead of becoming alerts of their
own: the lead keeps its labels — its identity, which is what Alertmanager deduplicates on — and
takes the sentence of the most serious finding now (silence first, then a failed layer, an
unreachable CAD target, the prediction). So a CAD target failing after its layer, a second CAD
target, the judged layer moving from "vpn" to "internet", the position flickering between silent
and heard, and the backlog a position sends once it is back, all update one incident.

The lead stays open while anything of the outage still holds (it never resolves while the position
is lost or getting worse), and resolves, with the story its backlog told, once nothing does.

Two exceptions keep news news:

- A silence that ended: once the position has been heard again for ``settle`` seconds, with data
  newer than its return (the backlog is through), what still fails is a state of its own — e.g.
  the VPN still down while the hotspot carries the agent — and pages as usual; the silence resolves
  with its story.
- Backlog after the outage closed: findings from data older than the position's return do not
  open a new page (they describe the outage that just ended).

Fleet incidents inhibit leads as they did the alerts they stand for; warnings are not part of an
outage (a warning that worsens to critical pages once more: routing goes by ``severity``), but a
``CadAtRisk`` warning already out is kept open while the outage is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from lifeline_collector.alerting.alert import Alert, AlertState, Finding, fingerprint
from lifeline_collector.alerting.health import read_health
from lifeline_collector.alerting.heard import last_heard
from lifeline_collector.alerting.state import AlertStates
from lifeline_collector.fleet import AgentView
from lifeline_wire.layers import FAILED_TEXT, series_layer

# The rules whose critical findings make one position's outage, most serious first.
RULES = ("PositionSilent", "PositionLayerFailed", "CadTargetUnreachable", "CadAtRisk")
SILENT = RULES[0]
SETTLE = 10.0  # seconds heard again, with current data, before what still fails pages on its own
REMEMBER = 300.0  # how long a closed outage's return guards against its backlog


def belongs(labels: Mapping[str, str]) -> bool:
    """Whether an alert with these labels is part of its position's outage."""
    return (
        labels.get("alertname") in RULES
        and labels.get("severity") == "critical"
        and labels.get("layer") != "power"  # the home's own business: its own page
    )


def _rank(finding: Finding) -> int:
    return RULES.index(finding.labels.get("alertname", ""))


def data_time(agent: AgentView) -> float | None:
    """The collector time the agent's newest judgement describes (None: no judgement yet)."""
    newest = -1
    for name in ("lifeline_verdict_info", "lifeline_layer_state"):
        for state in agent.named(name):
            newest = max(newest, state.ts_ms)
    if newest < 0:
        return None
    return newest / 1000 - (agent.clock_offset or 0.0)


def recovering(agent: AgentView, finding: Finding, since: float) -> bool:
    """Whether what ``finding`` says failed answers again since ``since``: a probe of its layer (of
    its CAD target) succeeded — the agent holds a layer failed a few rounds after it recovers."""
    labels = finding.labels
    name = labels.get("alertname")
    if name == "CadTargetUnreachable":
        target = labels.get("target", "")
        probes = [s for s in agent.named("lifeline_probe_success") if s.labels.get("target") == target]
    elif name == "PositionLayerFailed":
        layer = labels.get("layer", "")
        probes = [s for s in agent.named("lifeline_probe_success") if series_layer(s.labels) == layer]
    else:
        return False
    offset = agent.clock_offset or 0.0
    return any(s.value == 1 and s.ts_ms / 1000 - offset >= since for s in probes)


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


@dataclass(slots=True)
class Outage:
    lead: str  # the lead alert's fingerprint
    labels: dict[str, str]
    opened_at: float
    silent_since: float | None = None  # last heard before the current silence (None: not silent)
    heard_again_at: float | None = None  # when the position was heard after its last silence
    cut_off: float = 0.0  # seconds of silence in earlier spells of this outage
    # What the outage did, in order of first sight: key → (since, text)
    story: dict[str, tuple[float, str]] = field(default_factory=dict)
    backup: str = ""  # the backup path as last known ("hotspot not ready")
    headline: tuple[str, ...] = ()  # what a supervisor reads; a change is an update

    @property
    def was_silent(self) -> bool:
        return self.silent_since is not None or self.heard_again_at is not None

    def silent_seconds(self, now: float) -> float:
        current = 0.0 if self.silent_since is None else now - self.silent_since
        return self.cut_off + current

    def story_text(self, now: float) -> str:
        """What the outage did, once its data said something ("" until then)."""
        told = sorted(enumerate(self.story.values()), key=lambda item: (item[1][0], item[0]))
        parts = [f"{text} from {_clock(since)}" for _index, (since, text) in told]
        if not parts and self.heard_again_at is None:
            return ""  # the page's own sentence says all that is known
        if self.backup:
            parts.append(self.backup)
        body = "; ".join(parts) if parts else "nothing reported yet"
        head = f"cut off {self.silent_seconds(now):.0f} s: " if self.was_silent else ""
        return f"{head}{body} (UTC)" if self.story else f"{head}{body}"  # UTC: the times in it


@dataclass(slots=True)
class _Closed:
    heard_again_at: float | None
    closed_at: float


class Outages:
    def __init__(self, states: AlertStates, settle: float = SETTLE) -> None:
        self.states = states
        self.settle = settle
        self._open: dict[str, Outage] = {}  # scope → its open outage
        self._closed: dict[str, _Closed] = {}  # scope → the outage it closed last
        self._updated: set[str] = set()  # leads whose headline changed in this evaluation
        self._ending: dict[str, Outage] = {}  # lead → its closed outage, until the lead resolves

    def restore(self, alerts: list[Alert]) -> None:
        """After a restart: each position's earliest-fired outage alert leads its outage again."""
        for alert in sorted(alerts, key=lambda a: (a.fired_at or a.starts_at, a.fingerprint)):
            firing = alert.state is AlertState.FIRING
            if firing and belongs(alert.labels) and alert.scope not in self._open:
                self._open[alert.scope] = Outage(alert.fingerprint, dict(alert.labels), alert.starts_at)

    # --- before the state machine --------------------------------------------------------------

    def fold(self, agent: AgentView, findings: list[Finding], now: float) -> list[Finding]:
        """The findings the state machine should see for ``agent``: its outage's folded into the lead."""
        scope = agent.id
        mine = [f for f in findings if belongs(f.labels)]
        others = [f for f in findings if not belongs(f.labels)]
        outage = self._open.get(scope)
        if outage is None:
            firing = [f for f in mine if self._fires(f, now)]
            if not firing:
                return findings
            if self._backlog_of_closed(scope, agent):
                return others  # the outage this describes is over: no new page for it
            lead = min(firing, key=_rank)
            outage = self._open[scope] = Outage(fingerprint(lead.labels), dict(lead.labels), now)
        silent = any(f.labels.get("alertname") == SILENT for f in mine)
        self._follow_silence(outage, agent, silent, now)
        self._tell(outage, agent)
        if (
            not silent
            and outage.labels.get("alertname") == SILENT
            and outage.heard_again_at is not None
            and now - outage.heard_again_at >= self.settle
            and (data_time(agent) or now) >= outage.heard_again_at
            and not all(recovering(agent, f, outage.heard_again_at) for f in mine)
        ):
            # Heard again long enough, with data from after its return, and not recovering (its
            # probes still fail): what still fails is a state of its own and pages as usual; the
            # silence resolves with its story.
            self._close(scope, now)
            return others + mine
        if not mine:
            return others  # nothing holds: the lead resolves (after the resolve hold)
        kept = self._kept_warnings(scope, findings)
        # The sentence comes from what holds fully (a CAD target failing one round is not yet news).
        best = min([f for f in mine if f.firing] or mine, key=_rank)
        annotations = self._annotations(outage, agent, best, silent, now)
        lead = Finding(scope=scope, labels=outage.labels, annotations=annotations, firing=True)
        return [*others, *kept, lead]

    def _fires(self, finding: Finding, now: float) -> bool:
        if not finding.firing:
            return False
        current = self.states.get(fingerprint(finding.labels))
        if current is not None and current.state is AlertState.FIRING:
            return True
        starts = now if current is None else current.starts_at
        return now - starts >= finding.hold

    def _backlog_of_closed(self, scope: str, agent: AgentView) -> bool:
        closed = self._closed.get(scope)
        if closed is None or closed.heard_again_at is None:
            return False
        when = data_time(agent)
        return when is not None and when < closed.heard_again_at

    def _follow_silence(self, outage: Outage, agent: AgentView, silent: bool, now: float) -> None:
        if silent and outage.silent_since is None:
            outage.silent_since = last_heard(agent) or now
            outage.heard_again_at = None
        elif not silent and outage.silent_since is not None:
            heard = last_heard(agent) or now
            outage.cut_off += max(0.0, heard - outage.silent_since)
            outage.silent_since = None
            outage.heard_again_at = heard

    def _tell(self, outage: Outage, agent: AgentView) -> None:
        """Add what the position's data now says to the outage's story (backlog included)."""
        health = read_health(agent)
        when = data_time(agent)
        if when is None or not health.layers:
            return
        cause = health.verdict_layer
        if cause != "none" and health.first_failed() is not None and cause not in outage.story:
            outage.story[cause] = (when, FAILED_TEXT.get(cause) or health.verdict)
        if health.state("cad") == "failed" and "cad-lost" not in outage.story and cause != "cad":
            outage.story["cad-lost"] = (when, "CAD lost")
        if outage.heard_again_at is None or when < outage.heard_again_at:
            outage.backup = health.backup_phrase()  # as it was during the outage, not after

    def _kept_warnings(self, scope: str, findings: list[Finding]) -> list[Finding]:
        """A CadAtRisk warning already out stays open while the outage is (it is inhibited by the
        critical lead meanwhile); it resolves with the outage, not mid-way."""
        found = {fingerprint(f.labels) for f in findings}
        return [
            Finding(scope=scope, labels=a.labels, annotations=a.annotations, firing=True)
            for a in self.states.of_scope(scope)
            if a.name == "CadAtRisk" and a.severity == "warning" and a.fingerprint not in found
        ]

    def _annotations(
        self, outage: Outage, agent: AgentView, best: Finding, silent: bool, now: float
    ) -> dict[str, str]:
        notes = dict(best.annotations)
        story = outage.story_text(now)
        back = not silent and outage.heard_again_at is not None
        if back and best.labels.get("alertname") != SILENT:
            # Heard again: what the findings say may be the backlog of the outage, not the present.
            told = story.partition(": ")[2] if story.startswith("cut off ") else story
            notes["summary"] = (
                f"{agent.display_name} is heard again after {outage.silent_seconds(now):.0f} s cut off"
                f" — {told or 'catching up'}."
            )
        if story:
            notes["story"] = story
        notes["current"] = best.labels.get("alertname", "")
        subject = best.labels.get("layer") or best.labels.get("target") or ""
        if subject:
            notes["current_subject"] = subject
        headline = (notes["current"], subject, str(back), story.split(": ", 1)[-1])
        if headline != outage.headline:
            if outage.headline:  # not the first sight (a new lead, or one restored after a restart)
                self._updated.add(outage.lead)
            outage.headline = headline
        return notes

    def _close(self, scope: str, now: float) -> None:
        outage = self._open.pop(scope, None)
        if outage is not None:
            self._closed[scope] = _Closed(outage.heard_again_at, now)
            if self.states.get(outage.lead) is not None:
                self._ending[outage.lead] = outage  # resolving (hold): its story goes along

    # --- after the state machine ---------------------------------------------------------------

    def settle_scope(self, scope: str, now: float) -> None:
        """Close the outage whose lead is no longer active; forget old closed ones."""
        outage = self._open.get(scope)
        if outage is not None and self.states.get(outage.lead) is None:
            self._close(scope, now)
        closed = self._closed.get(scope)
        if closed is not None and now - closed.closed_at > REMEMBER:
            del self._closed[scope]

    def finish(self, alert: Alert, now: float) -> Alert:
        """A resolved lead carries the outage's final story (for the resolved notification)."""
        outage = self._ending.pop(alert.fingerprint, None) or self._open.get(alert.scope)
        if outage is None or outage.lead != alert.fingerprint:
            return alert
        story = outage.story_text(now)
        if not story:
            return alert
        notes = dict(alert.annotations)
        notes["story"] = story
        return replace(alert, annotations=notes)

    def updated(self) -> set[str]:
        """Lead fingerprints whose headline changed since the last call."""
        out, self._updated = self._updated, set()
        return out

    def forget(self, scope: str) -> None:
        self._open.pop(scope, None)
        self._closed.pop(scope, None)
        for lead in [fp for fp, outage in self._ending.items() if outage.labels.get("agent") == scope]:
            del self._ending[lead]
