"""Detection latency, lead time, false pages and verdicts: Lifeline vs the conventional stack, in the lab.

    .venv/bin/python bench/detection.py              # every shipped scenario, --runs 2 (≈ 30 min)
    .venv/bin/python bench/detection.py --runs 3 --scenarios cad-server-down,loss-ramp-total
    .venv/bin/python bench/detection.py --quick      # 1 run of 2 scenarios (the smoke test)

One lab (client VPN, CAD simulator). Both stacks watch the same scenario at the same time and page
the same webhook receiver (``lifeline_lab.webhook``): Lifeline — the agent in the laptop namespace,
the collector on the VPN concentrator's box reached through the tunnel or its public address —
and the conventional stack — blackbox_exporter (icmp + tcp_connect to the CAD server) scraped
every 5 s by Prometheus (rule ``probe_success == 0``, ``for: 0s``) and Alertmanager with its
documented ``group_wait: 30s`` — all three in the laptop namespace, so their scrapes and webhook
never cross an impairment (their best case). Each scenario run gets a fresh agent and a fresh
Prometheus and Alertmanager; the CAD simulator's log is the ground truth of when CAD was lost.

Figures (nothing is asserted; docs/benchmarks.md quotes the table):

- detection latency: hard cuts (scenarios that expect a page and a CAD loss, not the ramp):
  the scenario's first step → the first critical notification at the webhook; the total cut
  (total-cut: broadband and LTE blackholed, no path out of the house) also on its own row, where
  only silence can tell (heartbeats for Lifeline);
- incidents per outage: distinct critical alerts (label sets) notified in a scenario that expects
  a page — one outage should be one incident;
- lead time: the gradual scenario (loss-ramp-total): the first notification → the CAD
  simulator's "lost"; negative when the notification came after;
- false pages: benign scenarios (``[expect] page = false``): critical notifications;
- verdict: the agent's verdict held longest while the scenario's impairment was on, against its
  ``[expect] layer`` (isp is the agent's internet layer);
- netlink: the agent's link.changed event for eth0 after a cable pull / link down / power cut;
- predictions: every CadAtRisk notification claims "will likely lose CAD within T" (or "is
  losing CAD now", T = 0); it came true when the CAD simulator declared CAD lost between 5 s before
  it and T + ``claim_margin(T)`` after it. Per scenario: claims, claims that came true, the lead of
  the first true claim; overall precision, recall on the ramps (a true claim before each loss) and
  the verdict right per run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import need_binary

from lifeline_lab import impair, scenario
from lifeline_lab.conventional import (
    ALERTMANAGER,
    BLACKBOX,
    PROMETHEUS,
    ConventionalSettings,
    ConventionalStack,
)
from lifeline_lab.errors import LabError
from lifeline_lab.procs import wait_until
from lifeline_lab.stack import LifelineStack, agent_targets
from lifeline_lab.topology import Lab
from lifeline_lab.verdicts import cad_losses, healthy_fixtures
from lifeline_lab.webhook import Notification, WebhookReceiver

QUICK = ("cad-server-down", "loss-spikes-survived")
GRADUAL = ("loss-ramp-total",)
TOTAL_CUT = ("total-cut",)  # no path out of the house: only the collector can notice
AGENT_LAYER = {"isp": "internet"}  # scenario layer names → the agent's layer names
NETLINK_KINDS = ("cable-pull", "link-down", "power-off")
SETTLE = 45.0  # after a scenario: time for late notifications and for every alert to resolve


@dataclass
class Run:
    """What one scenario run produced, on the wall clock."""

    name: str
    expect: scenario.Expectation
    started: float
    cut_at: float  # the first impairment step
    impaired: tuple[float, float]  # first impairment step → last clear step
    lifeline: list[Notification] = field(default_factory=list)
    conventional: list[Notification] = field(default_factory=list)
    cad_lost: list[float] = field(default_factory=list)
    verdicts: list[tuple[float, str, str]] = field(default_factory=list)  # (t, layer, verdict)
    prometheus_firing: list[float] = field(default_factory=list)  # when Prometheus held a firing alert
    netlink: float | None = None  # seconds from the cut to the agent's link.changed event
    pulls_link: bool = False  # the scenario takes the laptop's primary link away
    note: str = ""

    def first_page(self, items: Sequence[Notification], after: float) -> float | None:
        times = [n.at for n in items if n.status == "firing" and n.severity == "critical" and n.at >= after]
        return min(times) - after if times else None

    def first_notice(self, items: Sequence[Notification]) -> float | None:
        times = [n.at for n in items if n.status == "firing" and n.at >= self.started]
        return min(times) if times else None

    def held_verdict(self) -> str:
        start, end = self.impaired
        seen = Counter(layer for t, layer, _v in self.verdicts if start <= t <= end and layer != "none")
        return seen.most_common(1)[0][0] if seen else "none"


WATCHED_LAYERS = ("router", "internet", "vpn", "cad")  # whose words --log prints as they change


class Sampler:
    """Polls the agent's status.json for its verdict, and Prometheus for firing alerts."""

    def __init__(self, stack: LifelineStack, conventional: ConventionalStack, interval: float = 0.25) -> None:
        self.stack = stack
        self.conventional = conventional
        self.interval = interval
        self.samples: list[tuple[float, str, str]] = []
        self.layer_words: list[tuple[float, str]] = []  # (t, every layer's reason) when they change
        self.prometheus_firing: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verdict-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            current = self.stack.assessment()
            if current is not None:
                now = time.time()
                self.samples.append((now, str(current["verdict_layer"]), str(current["verdict"])))
                layers = current.get("layers")
                if isinstance(layers, list):
                    words = "; ".join(
                        f"{item.get('layer')} {item.get('state')}: {item.get('reason')}"
                        for item in layers
                        if isinstance(item, dict) and item.get("layer") in WATCHED_LAYERS
                    )
                    if not self.layer_words or self.layer_words[-1][1] != words:
                        self.layer_words.append((now, words))
            if self.conventional.firing():
                self.prometheus_firing.append(time.time())


def settled(receiver: WebhookReceiver, via: str, since: float) -> bool:
    """Every alert that fired since ``since`` has been resolved at the receiver."""
    items = receiver.notifications(via=via, since=since)
    fired = {tuple(sorted(n.labels.items())) for n in items if n.status == "firing"}
    resolved = {tuple(sorted(n.labels.items())) for n in items if n.status == "resolved"}
    return fired <= resolved


def in_fresh_lab(sc: scenario.Scenario, settings: ConventionalSettings, interval: float, log: bool) -> Run:
    """One scenario run in a lab of its own: nothing carries over from the run before (WireGuard
    stays on the hotspot after a failover — it does not fail back by itself —, the CAD client may
    still be backing off, alerts may still be resolving)."""
    with Lab(f"bd{secrets.token_hex(2)}-", "client", cadsim=True) as lab:
        receiver = WebhookReceiver([lab.ns("vpnhub"), lab.ns("laptop")])
        lifeline = LifelineStack(lab, receiver)
        conventional = ConventionalStack(lab, receiver, settings)
        try:
            healthy_fixtures(lab)
            lifeline.start_collector()
            conventional.start()
            return run_one(lab, lifeline, conventional, sc, interval, log)
        finally:
            conventional.close()
            lifeline.close()
            receiver.close()


def run_one(
    lab: Lab,
    lifeline: LifelineStack,
    conventional: ConventionalStack,
    sc: scenario.Scenario,
    interval: float,
    log: bool,
) -> Run:
    lifeline.start_agent(agent_targets(interval=interval))
    lifeline.wait_healthy(timeout=90.0)
    wait_until(conventional.probes_up, "the blackbox probes to succeed", timeout=60.0)
    impairing = [s for s in sc.steps if s.action != "clear"]
    clears = [s for s in sc.steps if s.action == "clear"]
    started = time.time()
    run = Run(
        sc.name,
        sc.expect,
        started,
        started + impairing[0].at,
        (started + impairing[0].at, started + (clears[-1].at if clears else sc.duration)),
    )

    def emit(line: str) -> None:
        if log:
            print(f"    {line}", flush=True)

    with Sampler(lifeline, conventional) as sampler:
        try:
            scenario.run(lab, sc, emit=emit)
        except LabError as exc:  # a lab step that cannot be applied ends the run early
            run.note = f"run cut short: {exc.what.splitlines()[0]}"
            impair.clear(lab)
        ended = time.time()
        lifeline_via, conventional_via = lab.ns("vpnhub"), lab.ns("laptop")
        deadline = ended + SETTLE
        while time.time() < deadline and not (
            settled(lifeline.receiver, lifeline_via, started)
            and settled(lifeline.receiver, conventional_via, started)
            and not conventional.firing()
        ):
            time.sleep(0.5)
        run.verdicts = list(sampler.samples)
        layer_words = list(sampler.layer_words)
        run.prometheus_firing = list(sampler.prometheus_firing)
    run.lifeline = lifeline.receiver.notifications(via=lifeline_via, since=started)
    run.conventional = lifeline.receiver.notifications(via=conventional_via, since=started)
    run.cad_lost = cad_losses(lab, started)
    if log:  # what the agent said and what was paged, in order, from the first impairment
        said = ""
        for t, layer, verdict in run.verdicts:
            if verdict != said:
                emit(f"[{t - run.cut_at:+6.1f}s] verdict {layer}: {verdict}")
                said = verdict
        for n in run.lifeline:
            what = n.labels.get("layer") or n.labels.get("target") or ""
            emit(f"[{n.at - run.cut_at:+6.1f}s] {n.status} {n.name}/{what} ({n.severity})")
        for t, words in layer_words:
            emit(f"[{t - run.cut_at:+6.1f}s] layers {words}")
    run.pulls_link = any(s.impairment is not None and s.impairment.kind in NETLINK_KINDS for s in impairing)
    if run.pulls_link:
        cut_ms = int(run.cut_at * 1000) - 200
        events = [
            ts
            for ts, attrs in lifeline.events("link.changed", cut_ms)
            if attrs.get("interface") == "eth0" and attrs.get("action") == "down"
        ]
        run.netlink = (min(events) / 1000.0 - run.cut_at) if events else None
    return run


# -- the tables -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with few runs every figure is a real run)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def spread(values: Sequence[float], missed: int) -> str:
    if not values:
        return f"no page ({missed} missed)" if missed else "—"
    text = f"p50 {percentile(values, 50):.1f} s, p95 {percentile(values, 95):.1f} s (n={len(values)})"
    return text + (f", {missed} missed" if missed else "")


def report(runs: Sequence[Run], settings: ConventionalSettings, interval: float, runs_per: int) -> None:
    hard = [r for r in runs if r.expect.page and r.expect.cad_lost and r.name not in GRADUAL]
    gradual = [r for r in runs if r.name in GRADUAL]
    benign = [r for r in runs if not r.expect.page]
    rows: list[tuple[str, str, str, str, str]] = []

    def latencies(which: str) -> tuple[list[float], int]:
        found = [r.first_page(getattr(r, which), r.cut_at) for r in hard]
        return [v for v in found if v is not None], sum(v is None for v in found)

    fired = [
        min(t for t in r.prometheus_firing if t >= r.cut_at) - r.cut_at
        for r in hard
        if any(t >= r.cut_at for t in r.prometheus_firing)
    ]
    ll, ll_missed = latencies("lifeline")
    cv, cv_missed = latencies("conventional")
    met = "yes" if ll and not ll_missed and percentile(ll, 95) < 3.0 else "no"
    rows.append(
        (
            "detection latency, hard cut → page",
            "p95 < 3 s",
            spread(ll, ll_missed),
            spread(cv, cv_missed),
            met if hard else "not run",
        )
    )

    def leads(which: str) -> list[float]:
        out = []
        for r in gradual:
            notice = r.first_notice(getattr(r, which))
            if r.cad_lost and notice is not None:
                out.append(r.cad_lost[0] - notice)
        return out

    rows.append(
        (
            "… of which: the alert firing inside Prometheus",
            "",
            "n/a",
            spread(fired, len(hard) - len(fired)),
            "",
        )
    )
    total = [r for r in hard if r.name in TOTAL_CUT]
    if total:

        def cut_latencies(which: str) -> tuple[list[float], int]:
            found = [r.first_page(getattr(r, which), r.cut_at) for r in total]
            return [v for v in found if v is not None], sum(v is None for v in found)

        tl, tl_missed = cut_latencies("lifeline")
        tc, tc_missed = cut_latencies("conventional")
        ahead = sum(
            1
            for r in total
            if r.cad_lost
            and (first := r.first_page(r.lifeline, r.cut_at)) is not None
            and r.cut_at + first < r.cad_lost[0]
        )
        rows.append(
            (
                "total cut (no path out of the house) → page",
                "p95 ≤ 3 s, before CAD lost",
                spread(tl, tl_missed) + f"; before CAD lost in {ahead} of {len(total)}",
                spread(tc, tc_missed),
                "yes" if tl and not tl_missed and percentile(tl, 95) <= 3.0 and ahead == len(total) else "no",
            )
        )

    def incidents(which: str) -> list[int]:
        return [
            len(
                {
                    tuple(sorted(n.labels.items()))
                    for n in getattr(r, which)
                    if n.status == "firing" and n.severity == "critical"
                }
            )
            for r in runs
            if r.expect.page
        ]

    ll_inc, cv_inc = incidents("lifeline"), incidents("conventional")
    if ll_inc:
        rows.append(
            (
                "incidents per outage (critical alerts per paging scenario run)",
                "1",
                f"mean {statistics.mean(ll_inc):.1f}, max {max(ll_inc)} (n={len(ll_inc)})",
                f"mean {statistics.mean(cv_inc):.1f}, max {max(cv_inc)} (n={len(cv_inc)})",
                "yes" if max(ll_inc) == 1 and min(ll_inc) == 1 else "no",
            )
        )
    ll_lead, cv_lead = leads("lifeline"), leads("conventional")

    def median(values: list[float], of: int) -> str:
        if not values:
            return f"no notice before the end (n={of})" if of else "—"
        return f"median {statistics.median(values):.1f} s (n={len(values)})"

    met = "yes" if ll_lead and statistics.median(ll_lead) >= 30.0 else "no"
    rows.append(
        (
            "lead time, first notice → CAD lost",
            "median ≥ 30 s",
            median(ll_lead, len(gradual)),
            median(cv_lead, len(gradual)),
            met if gradual else "not run",
        )
    )

    def false_pages(which: str) -> int:
        return sum(
            1 for r in benign for n in getattr(r, which) if n.status == "firing" and n.severity == "critical"
        )

    warnings = sum(1 for r in benign for n in r.lifeline if n.status == "firing" and n.severity != "critical")
    ll_false = false_pages("lifeline")
    rows.append(
        (
            "false pages, benign scenarios",
            "none",
            f"{ll_false} in {len(benign)} runs (+{warnings} warnings)",
            f"{false_pages('conventional')} in {len(benign)} runs",
            "yes" if benign and not ll_false else ("no" if benign else "not run"),
        )
    )
    right = [r for r in runs if r.held_verdict() == AGENT_LAYER.get(r.expect.layer, r.expect.layer)]
    rows.append(
        (
            "verdict names the expected layer",
            "every scenario",
            f"{len(right)} of {len(runs)} runs",
            "n/a (no layers)",
            "yes" if len(right) == len(runs) else "no",
        )
    )
    nl = [r.netlink for r in runs if r.netlink is not None]
    pulls = [r for r in runs if r.pulls_link]
    if not pulls:
        nl_text, nl_met = "—", "not run"
    elif nl:
        nl_text = f"p50 {percentile(nl, 50):.2f} s, max {max(nl):.2f} s (n={len(nl)})"
        nl_text += f", {len(pulls) - len(nl)} without an event" if len(nl) < len(pulls) else ""
        nl_met = "yes" if len(nl) == len(pulls) and max(nl) <= 1.0 else "no"
    else:
        nl_text, nl_met = f"no event in {len(pulls)} runs", "no"
    rows.append(("netlink event after a cable pull / link down", "≤ 1 s", nl_text, "n/a", nl_met))

    cores = os.cpu_count() or 0
    cpu = _cpu_model()
    print("### Detection and lead time: Lifeline vs blackbox_exporter + Prometheus + Alertmanager")
    print()
    print(
        f"{dt.datetime.now(dt.UTC).date().isoformat()}, {cores} cores ({cpu}),"
        f" Python {platform.python_version()};"
        f" {runs_per} run(s) per scenario; agent probes every {interval:g} s."
    )
    print(f"Conventional stack: {settings.describe()}.")
    print()
    print("| metric | goal | Lifeline | conventional stack | goal met (Lifeline) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("### Per scenario run")
    print()
    print(
        "| scenario | expect | verdict held (expected) | CAD lost | Lifeline first page | conventional"
        " first page | notes |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        expected = AGENT_LAYER.get(r.expect.layer, r.expect.layer)
        held = r.held_verdict()
        lost = seconds(r.cad_lost[0] - r.cut_at) if r.cad_lost else "no"
        ll_first = r.first_page(r.lifeline, r.cut_at)
        cv_first = r.first_page(r.conventional, r.cut_at)
        names = sorted(
            {
                f"{n.name}/{n.labels.get('layer') or n.labels.get('target') or n.severity}"
                for n in r.lifeline
                if n.status == "firing"
            }
        )
        notes = [", ".join(names) or "no Lifeline alert"]
        if r.netlink is not None:
            notes.append(f"netlink {r.netlink:.2f} s")
        if r.note:
            notes.append(r.note)
        print(
            f"| {r.name} | {'page' if r.expect.page else 'no page'} | {held}"
            f"{'' if held == expected else f' ✗ ({expected})'} | {lost} | {seconds(ll_first)} |"
            f" {seconds(cv_first)} | {'; '.join(notes)} |"
        )
    print()
    print("Times are from each scenario's first impairment step. Pages are critical notifications;")
    print("Lifeline's first notice in the ramp may be a CadAtRisk warning or critical.")
    print()
    prediction_report(runs)


_WITHIN = re.compile(r"within (\d+(?:\.\d+)?) (s|min|h)\b")


def claimed_time(summary: str) -> float | None:
    """The time a CadAtRisk summary says CAD has left (0 for "is losing CAD now"); None if none."""
    if "is losing CAD now" in summary:
        return 0.0
    found = _WITHIN.search(summary)
    if found is None:
        return None
    return float(found.group(1)) * {"s": 1.0, "min": 60.0, "h": 3600.0}[found.group(2)]


def claim_margin(seconds: float) -> float:
    """How late CAD may be lost and "within T" still count as having come true: a prediction from
    a trend is a forecast, and the CAD client's own patience (5 s) and the agent's one-second
    evaluations blur the moment; half the time claimed plus 10 s."""
    return seconds / 2 + 10.0


@dataclass(frozen=True, slots=True)
class Claim:
    at: float
    seconds: float
    came_true: bool
    lead: float | None  # the CAD simulator's loss after the claim, when it came true


def claims(r: Run) -> list[Claim]:
    """Each distinct CadAtRisk claim of a run (a warning and its critical twin sent together with
    the same words are one claim), judged against the CAD simulator's losses."""
    out: list[Claim] = []
    seen: set[tuple[int, str]] = set()
    for n in sorted(r.lifeline, key=lambda n: n.at):
        if n.name != "CadAtRisk" or n.status != "firing":
            continue
        summary = str(n.annotations.get("summary", ""))
        key = (round(n.at / 2.0), summary)
        if key in seen:
            continue
        seen.add(key)
        t = claimed_time(summary)
        if t is None:
            continue
        lost = [x for x in r.cad_lost if n.at - 5.0 <= x <= n.at + t + claim_margin(t)]
        out.append(Claim(n.at, t, bool(lost), (lost[0] - n.at) if lost else None))
    return out


def prediction_report(runs: Sequence[Run]) -> None:
    print("### Predictions (CadAtRisk) and verdicts, per scenario")
    print()
    print(
        "| scenario | runs | CAD lost (runs) | claims | came true | lead of the first true claim |"
        " verdict right |"
    )
    print("|---|---|---|---|---|---|---|")
    total = true = 0
    ramp_runs = ramp_found = 0
    leads: list[float] = []
    verdict_runs = verdict_right = 0
    for name in dict.fromkeys(r.name for r in runs):
        group = [r for r in runs if r.name == name]
        found = [claims(r) for r in group]
        made = sum(len(c) for c in found)
        right = sum(1 for c in found for x in c if x.came_true)
        firsts = [next((x.lead for x in c if x.came_true and x.lead is not None), None) for c in found]
        these = [v for v in firsts if v is not None]
        expected = [AGENT_LAYER.get(r.expect.layer, r.expect.layer) for r in group]
        ok = sum(1 for r, e in zip(group, expected, strict=True) if r.held_verdict() == e)
        total, true = total + made, true + right
        verdict_runs, verdict_right = verdict_runs + len(group), verdict_right + ok
        if name in GRADUAL:
            for r, c in zip(group, found, strict=True):
                if r.cad_lost:
                    ramp_runs += 1
                    ramp_found += any(x.came_true and x.at < r.cad_lost[0] for x in c)
            leads += these
        lead_text = ", ".join(f"{v:.1f} s" for v in these) or "—"
        print(
            f"| {name} | {len(group)} | {sum(1 for r in group if r.cad_lost)} | {made} | {right} |"
            f" {lead_text} | {ok} of {len(group)} |"
        )
    print()
    precision = f"{true / total * 100:.0f} % ({true} of {total})" if total else "no claim made"
    recall = (
        f"{ramp_found / ramp_runs * 100:.0f} % ({ramp_found} of {ramp_runs})" if ramp_runs else "no ramp run"
    )
    lead = f"{statistics.median(leads):.1f} s (n={len(leads)})" if leads else "—"
    print("| metric | goal | Lifeline | goal met |")
    print("|---|---|---|---|")
    print(
        f"| precision: CadAtRisk claims that came true | ≥ 90 % | {precision} |"
        f" {'yes' if total and true / total >= 0.9 else ('no' if total else 'n/a')} |"
    )
    print(
        f"| recall on the ramps: a true claim before CAD was lost | 100 % | {recall} |"
        f" {'yes' if ramp_runs and ramp_found == ramp_runs else 'no'} |"
    )
    print(
        f"| lead time on the ramps, median | ≥ 30 s | {lead} |"
        f" {'yes' if leads and statistics.median(leads) >= 30.0 else 'no'} |"
    )
    print(
        f"| verdict names the expected layer | every run | {verdict_right} of {verdict_runs} runs |"
        f" {'yes' if verdict_right == verdict_runs else 'no'} |"
    )
    print()
    print("A claim came true when the CAD simulator lost CAD between 5 s before it and T + T/2 + 10 s")
    print("after it; a warning and its critical twin sent together count once.")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each scenario (default 2)")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"1 run of {' and '.join(QUICK)}")
    parser.add_argument("--interval", type=float, default=1.0, help="agent probe interval, s (default 1)")
    parser.add_argument("--log", action="store_true", help="print each scenario's timeline as it plays")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench/detection.py needs root: it builds the lab (namespaces, WireGuard, nft)")
    for binary in (BLACKBOX, PROMETHEUS, ALERTMANAGER):
        need_binary(f"/usr/bin/{binary}")
    names = (
        list(QUICK)
        if args.quick
        else ([n.strip() for n in args.scenarios.split(",") if n.strip()] or scenario.shipped())
    )
    runs_per = 1 if args.quick else max(1, args.runs)
    loaded = [scenario.load(name) for name in names]
    settings = ConventionalSettings()
    runs: list[Run] = []
    for index in range(runs_per):
        for sc in loaded:
            print(f"run {index + 1}/{runs_per}: {sc.name} ({sc.duration:g} s)", file=sys.stderr, flush=True)
            try:
                runs.append(in_fresh_lab(sc, settings, args.interval, args.log))
            except LabError as exc:
                # A lab that could not be set up (a process that would not start) loses that run,
                # not the runs before it: it is left out of the tables and said here.
                print(f"  run lost: {exc.what.splitlines()[0]}", file=sys.stderr, flush=True)
    report(runs, settings, args.interval, runs_per)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
