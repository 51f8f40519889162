"""One incident for a shared cause: many positions losing the same dependency at once.

Each evaluated position says which agency-side dependency it has lost, if any: the VPN
concentrator (its failing ``vpn`` targets), the agency network, agency DNS, the CAD host (its
failing ``cad`` targets), or contact with the collector (silent). When at least
``min_positions`` positions of a site — or ``min_ratio`` of the site's positions, and at least
two — lose the same dependency within ``window`` of each other, one ``FleetIncident`` fires and
the per-position pages of its members are inhibited: they stay visible in the API, marked, but no
one is paged forty times for one broken concentrator.

Positions whose targets have different names but lost the same layer still form one site-wide
incident for that layer (``dependency = "<layer> (site-wide)"``). An incident stays open while
enough members remain; once fewer than the threshold remain it still holds for ``window``, so a
staggered recovery does not page the stragglers one by one.

The work per evaluation is proportional to the affected site, not the fleet.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from lifeline_collector.alerting.alert import Finding, fingerprint
from lifeline_collector.alerting.health import failing_dependencies, read_health
from lifeline_collector.alerting.heard import SilencePolicy, last_heard
from lifeline_collector.fleet import AgentView
from lifeline_wire.layers import AGENCY_SIDE

NAME = "FleetIncident"
SCOPE_PREFIX = "fleet:"
SITE_WIDE = "(site-wide)"
SILENT = "silent"

# Per-position alerts a fleet incident holds back for its members (power and backup warnings are
# the home's own business and still go out).
INHIBITABLE = frozenset({"PositionLayerFailed", "CadAtRisk", "CadTargetUnreachable", "PositionSilent"})

_WHAT = {
    "vpn": ("the VPN concentrator", "the VPN tunnel"),
    "agency": ("the agency network at", "the agency network"),
    "dns": ("agency DNS at", "agency DNS"),
    "cad": ("the CAD server", "CAD"),
}

Key = tuple[str, str]  # (cause, dependency)


@dataclass(frozen=True, slots=True)
class FleetPolicy:
    min_positions: int = 3
    min_ratio: float = 0.5
    window: float = 60.0
    silent_after: float = 15.0


def scope_of(site: str) -> str:
    return SCOPE_PREFIX + site


def lost_dependencies(agent: AgentView, now: float, silence: SilencePolicy) -> dict[Key, float | None]:
    """What this position has lost beyond its home → when it started (None: not known, use now)."""
    heard = last_heard(agent)
    if heard is None:
        return {}
    if silence.silent(agent, now):
        return {(SILENT, "collector"): heard}
    health = read_health(agent)
    home_side_failed = health.first_failed(("link", "router", "internet")) is not None
    layer = health.first_failed(AGENCY_SIDE)
    if layer is None or home_side_failed or (health.on_backup and layer != "cad"):
        return {}
    deps = failing_dependencies(agent, layer)
    return {(layer, ", ".join(deps)): None}


@dataclass(slots=True)
class _Incident:
    last_met: float
    members: frozenset[str] = field(default_factory=frozenset)


class FleetCorrelator:
    name = NAME

    def __init__(
        self, policy: FleetPolicy, public_url: str, hold: float = 0.0, silence: SilencePolicy | None = None
    ) -> None:
        self.policy = policy
        # Silence as PositionSilent judges it (heartbeats, or batches for older agents).
        self.silence = silence or SilencePolicy(policy.silent_after, policy.silent_after)
        self.public_url = public_url
        self.hold = hold
        self._lost: dict[str, dict[Key, float]] = {}  # agent → what it lost → since (collector clock)
        self._site: dict[str, str] = {}  # every observed agent → its site
        self._sizes: Counter[str] = Counter()  # site → observed agents
        self._names: dict[str, str] = {}  # agent → "Position 12 (north)"
        self._open: dict[tuple[str, str, str], _Incident] = {}  # (site, cause, dependency)
        self.members: dict[str, frozenset[str]] = {}  # incident fingerprint → member agents

    def agents(self) -> set[str]:
        return set(self._site)

    def has_lost(self, agent_id: str) -> bool:
        """Whether the agent has lost something beyond its home (it may count towards an incident)."""
        return agent_id in self._lost

    def observe(self, agent: AgentView, now: float) -> set[str]:
        """Update what ``agent`` has lost; returns the sites whose incidents need re-evaluating."""
        sites = {agent.site}
        old_site = self._site.get(agent.id)
        if old_site is not None and old_site != agent.site:
            sites.add(old_site)
        if old_site != agent.site:
            if old_site is not None:
                self._sizes[old_site] -= 1
            self._sizes[agent.site] += 1
        self._site[agent.id] = agent.site
        self._names[agent.id] = agent.display_name
        before = self._lost.get(agent.id, {})
        found = lost_dependencies(agent, now, self.silence)
        now_lost = {key: before.get(key, now if since is None else since) for key, since in found.items()}
        if now_lost:
            self._lost[agent.id] = now_lost
        else:
            self._lost.pop(agent.id, None)
        return sites

    def forget(self, agent_id: str) -> set[str]:
        site = self._site.pop(agent_id, None)
        if site is not None:
            self._sizes[site] -= 1
        self._names.pop(agent_id, None)
        self._lost.pop(agent_id, None)
        return set() if site is None else {site}

    def threshold(self, site: str) -> int:
        by_ratio = max(2, math.ceil(self.policy.min_ratio * self._sizes[site]))
        return min(self.policy.min_positions, by_ratio)

    def findings(self, site: str, now: float) -> list[Finding]:
        """The incidents of ``site`` now (its scope is ``fleet:<site>``)."""
        threshold = self.threshold(site)
        groups: dict[str, dict[str, dict[str, float]]] = {}  # cause → dependency → agent → since
        for agent, lost in self._lost.items():
            if self._site.get(agent) != site:
                continue
            for (cause, dep), since in lost.items():
                groups.setdefault(cause, {}).setdefault(dep, {})[agent] = since
        out: list[Finding] = []
        alive: set[tuple[str, str, str]] = set()
        for cause, by_dep in sorted(groups.items()):
            claimed: set[str] = set()
            for dep, members in sorted(by_dep.items()):
                if dep and self._holds((site, cause, dep), members, threshold, now):
                    alive.add((site, cause, dep))
                    claimed.update(members)
                    out.append(self._finding(site, cause, dep, members))
            rest = {a: t for members in by_dep.values() for a, t in members.items() if a not in claimed}
            key = (site, cause, SITE_WIDE)
            if rest and self._holds(key, rest, threshold, now):
                alive.add(key)
                out.append(self._finding(site, cause, SITE_WIDE, rest))
        for key in [k for k in self._open if k[0] == site and k not in alive]:
            del self._open[key]
        return out

    def _holds(
        self, key: tuple[str, str, str], members: dict[str, float], threshold: int, now: float
    ) -> bool:
        incident = self._open.get(key)
        if len(members) >= threshold and (
            incident is not None or _clustered(members.values(), threshold, self.policy.window)
        ):
            if incident is None:
                incident = self._open[key] = _Incident(now)
            incident.last_met = now
            return True
        return incident is not None and now - incident.last_met < self.policy.window

    def _finding(self, site: str, cause: str, dep: str, members: dict[str, float]) -> Finding:
        labels = {"alertname": NAME, "site": site, "cause": cause, "dependency": dep, "severity": "critical"}
        self.members[fingerprint(labels)] = frozenset(members)
        count = len(members)
        where = site or "an unnamed site"
        if cause == SILENT:
            summary = (
                f"{count} positions at {where} went silent within {self.policy.window:.0f} s — the collector"
                " lost them all at once: agency network or collector-side problem, not the homes."
            )
        else:
            specific, general = _WHAT.get(cause, (cause, cause))
            what = f"{general} at once" if dep == SITE_WIDE else f"{specific} {dep}"
            summary = f"{count} positions at {where} lost {what} — agency-side problem, not the homes."
        names = sorted(self._names.get(agent, agent) for agent in members)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return Finding(
            scope=scope_of(site),
            labels=labels,
            annotations={
                "summary": summary,
                "description": (
                    f"Affected: {shown}. Check the agency side ({cause}: {dep}) first; the per-position"
                    " pages of these positions are held back (inhibited) while this incident fires."
                ),
                "link": f"{self.public_url}/api/v1/alerts?site={site}",
                "positions": str(count),
            },
            firing=True,
            hold=self.hold,
        )

    def inhibitors(self, agent: str, firing: Iterable[str]) -> list[str]:
        """Fingerprints among ``firing`` incidents that hold ``agent`` as a member."""
        return [fp for fp in firing if agent in self.members.get(fp, frozenset())]

    def drop(self, fp: str) -> None:
        self.members.pop(fp, None)


def _clustered(times: Iterable[float], threshold: int, window: float) -> bool:
    """At least ``threshold`` of ``times`` fall within ``window`` of each other."""
    ordered = sorted(times)
    return any(ordered[i + threshold - 1] - ordered[i] <= window for i in range(len(ordered) - threshold + 1))
