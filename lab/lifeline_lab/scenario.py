"""Scenarios: a timeline of impairments and fixture readings, with the outcome it should have.

A scenario is a TOML file (``lab/lifeline_lab/scenarios/*.toml``)::

    description = "Home broadband dies; the laptop fails over to the hotspot"
    duration = "60s"
    vpn = "client"                # client | router | any: the lab variant the expectation is for

    [expect]                      # what a benchmark scores Lifeline against
    cad_lost = true               # the CAD simulator declares CAD lost during the run
    layer = "link"                # the first broken layer the agent should name
    page = true                   # a supervisor should be paged (false: no page, maybe a warning)

    [[steps]]
    at = "10s"
    action = "loss"               # any impairment kind, or clear | ramp | load
    link = "primary"
    direction = "both"
    percent = 30

    [[fixtures]]                  # Wi-Fi / cellular / power readings (see fixtures.py)
    at = "0s"
    power = { on_ac = true, battery_ratio = 1.0 }

``ramp`` steps (``kind``, ``from``, ``to``, ``over``, ``steps``) expand into plain steps when
loaded; ``load`` starts a bulk upload for ``seconds``; ``clear`` removes impairments (all, or
those of ``link`` and/or ``kind``). Every problem in a file is reported at once with its path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifeline_lab import fixtures, impair
from lifeline_lab.errors import ImpairmentError, ScenarioError
from lifeline_lab.topology import Lab
from lifeline_wire.tomlcfg import ConfigError, Section, build, load_toml

SCENARIO_DIR = Path(__file__).parent / "scenarios"
ACTIONS = (*impair.KINDS, "clear", "ramp", "load")
LAYERS = ("none", "link", "router", "isp", "backup", "vpn", "agency", "dns", "cad", "power")
RAMP_FIELDS = {"loss": "percent", "burst-loss": "percent", "delay": "delay_ms", "rate": "rate_kbit"}
PARAMS = ("delay_ms", "jitter_ms", "percent", "burst_len", "rate_kbit", "latency_ms")


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    action: str  # an impairment kind, "clear" or "load"
    impairment: impair.Impairment | None = None
    link: str | None = None  # clear filter
    kind: str | None = None  # clear filter
    seconds: float = 0.0  # load
    note: str = ""

    def describe(self) -> str:
        if self.impairment is not None:
            return self.impairment.describe()
        if self.action == "load":
            return f"load: bulk upload for {self.seconds:g}s"
        what = " ".join(x for x in (self.link, self.kind) if x) or "everything"
        return f"clear {what}"


@dataclass(frozen=True, slots=True)
class Expectation:
    cad_lost: bool
    layer: str
    page: bool
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration: float
    vpn: str
    expect: Expectation
    steps: tuple[Step, ...]
    fixtures: tuple[tuple[float, dict[str, Any]], ...] = ()
    source: str = ""


def _step(sec: Section, steps: list[Step], duration: float) -> None:
    at = sec.duration("at", 0.0, min=0.0)
    if not sec.has("at"):
        sec.error("at", "is required")
    action = sec.choice("action", "clear", ACTIONS)
    if not sec.has("action"):
        sec.error("action", f"is required (one of {', '.join(ACTIONS)})")
    note = sec.text("note")
    link = sec.text("link") if sec.has("link") else None
    if action == "power-off":
        link = sec.choice("node", "homerouter", impair.POWER_NODES)
    direction = sec.choice("direction", "both", impair.DIRECTIONS)
    params: dict[str, Any] = {name: sec.number(name, 0.0, min=0.0) for name in PARAMS if sec.has(name)}
    if sec.has("mode"):
        params["mode"] = sec.text("mode")
    if action == "clear":
        kind = sec.choice("kind", "", impair.KINDS) if sec.has("kind") else None
        steps.append(Step(at, "clear", link=link, kind=kind, note=note))
    elif action == "load":
        seconds = sec.duration("seconds", 10.0, min=0.1)
        steps.append(Step(at, "load", seconds=seconds, note=note))
    elif action == "ramp":
        kind = sec.choice("kind", "loss", tuple(RAMP_FIELDS))
        start = sec.number("from", 0.0, min=0.0)
        end = sec.number("to", 100.0, min=0.0)
        over = sec.duration("over", 60.0, min=0.1)
        count = sec.integer("steps", 10, min=1, max=1000)
        for name in ("from", "to", "over"):
            if not sec.has(name):
                sec.error(name, "is required for a ramp")
        for index in range(count + 1):
            value = start + (end - start) * index / count
            try:
                if kind == "delay" and value <= 0:
                    steps.append(Step(at + over * index / count, "clear", link=link, kind="delay", note=note))
                    continue
                imp = impair.make(kind, link or "", direction, **{**params, RAMP_FIELDS[kind]: value})
            except ImpairmentError as exc:
                sec.error("kind", exc.what)
                return
            steps.append(Step(at + over * index / count, kind, impairment=imp, note=note))
    else:
        try:
            imp = impair.make(action, link or "", direction, **params)
        except ImpairmentError as exc:
            sec.error("action", exc.what)
            return
        steps.append(Step(at, action, impairment=imp, note=note))
    if at > duration:
        sec.error("at", f"is after the scenario's duration ({duration:g}s)")
    sec.finish()


def _fixture(sec: Section, out: list[tuple[float, dict[str, Any]]]) -> None:
    at = sec.duration("at", 0.0, min=0.0)
    if not sec.has("at"):
        sec.error("at", "is required")
    reading: dict[str, Any] = {}
    for section in fixtures.SECTIONS:
        if sec.has(section):
            sec.touch(section)
            value = sec.data[section]
            if value is not None and not isinstance(value, dict):
                sec.error(section, "must be a table")
                continue
            if value is not None:
                for path, reason in fixtures.validate_section(section, value, sec.key(section)):
                    sec.problems.add(path, reason)
            reading[section] = value
    if not reading:
        sec.error("(fixture)", f"needs at least one of {', '.join(fixtures.SECTIONS)}")
    sec.finish()
    out.append((at, reading))


def parse(data: dict[str, Any], source: str, name: str) -> Scenario:
    def reader(root: Section) -> Scenario:
        duration = root.duration("duration", 60.0, min=1.0, max=86400.0)
        description = root.text("description", required=True)
        vpn = root.choice("vpn", "any", ("client", "router", "any"))
        exp = root.table("expect")
        expect = Expectation(
            cad_lost=exp.flag("cad_lost", False),
            layer=exp.choice("layer", "none", LAYERS),
            page=exp.flag("page", False),
            notes=exp.text("notes"),
        )
        for key in ("cad_lost", "layer", "page"):
            if not exp.has(key):
                exp.error(key, "is required")
        exp.finish()
        steps: list[Step] = []
        for sec in root.tables("steps"):
            _step(sec, steps, duration)
        readings: list[tuple[float, dict[str, Any]]] = []
        for sec in root.tables("fixtures"):
            _fixture(sec, readings)
        return Scenario(
            name=root.text("name", name),
            description=description,
            duration=duration,
            vpn=vpn,
            expect=expect,
            steps=tuple(sorted(steps, key=lambda s: s.at)),
            fixtures=tuple(sorted(readings, key=lambda r: r[0])),
            source=source,
        )

    try:
        return build(source, data, reader)
    except ConfigError as exc:
        raise ScenarioError(source, exc.problems) from None


def load(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``primary-cut-failover``) or any scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise ScenarioError(str(name_or_path), [("(file)", f"not found; shipped: {', '.join(shipped())}")])
    try:
        data = load_toml(path)
    except ConfigError as exc:
        raise ScenarioError(str(path), exc.problems) from None
    return parse(data, str(path), path.stem)


def shipped() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


# -- running ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    scenario: str
    started: float
    cad_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cad_lost(self) -> bool:
        return any(e.get("event") == "lost" for e in self.cad_events)

    def outages(self) -> list[float]:
        return [float(e["outage_s"]) for e in self.cad_events if e.get("event") == "restored"]


def write_fixtures(lab: Lab, scenario: Scenario, t0: float) -> int:
    """The scenario's readings on the wall clock of this run, after a healthy baseline."""
    base_ms = int(t0 * 1000)
    readings: list[dict[str, Any]] = [{"ts_ms": base_ms - 1, **fixtures.HEALTHY}]
    readings += [{"ts_ms": base_ms + int(at * 1000), **values} for at, values in scenario.fixtures]
    return fixtures.write(lab.fixture_path, readings)


def run(
    lab: Lab,
    scenario: Scenario,
    *,
    emit: Callable[[str], None] = print,
    keep: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Play the timeline in real time, printing each step and the CAD simulator's lost/restored."""
    if scenario.vpn != "any" and scenario.vpn != lab.vpn:
        emit(f"note: {scenario.name} expects the {scenario.vpn} VPN variant; this lab runs {lab.vpn}")
    if "cad-client" in lab.procs and not lab.process_alive("cad-client") and lab.process_alive("cad-server"):
        lab.stop_process("cad-client")
        lab.start_cad_client()
    seen = len(lab.cad_events())
    impair.clear(lab)
    wall0 = time.time()
    written = write_fixtures(lab, scenario, wall0)
    result = RunResult(scenario.name, wall0)
    emit(f"scenario {scenario.name}: {scenario.description}")
    emit(f"  {len(scenario.steps)} step(s), {written} fixture reading(s) → {lab.fixture_path}")
    t0 = clock()

    def follow_until(deadline: float) -> None:
        nonlocal seen
        while True:
            events = lab.cad_events()
            for event in events[seen:]:
                if event.get("event") in ("lost", "restored", "connected"):
                    emit(f"[+{event['ts'] - wall0:6.1f}s] CAD {event['event']} {_details(event)}")
                result.cad_events.append(event)
            seen = len(events)
            left = deadline - clock()
            if left <= 0:
                return
            sleep(min(0.1, left))

    try:
        for step in scenario.steps:
            follow_until(t0 + step.at)
            _do(lab, step)
            emit(f"[+{clock() - t0:6.1f}s] {step.describe()}" + (f"  — {step.note}" if step.note else ""))
        follow_until(t0 + scenario.duration)
    finally:
        if not keep:
            impair.clear(lab)
            fixtures.write(
                lab.fixture_path, [{"ts_ms": int(time.time() * 1000), **fixtures.HEALTHY}], append=True
            )
            for name in ("upload",):
                if name in lab.procs:
                    lab.stop_process(name)
    exp = scenario.expect
    verdict = "as expected" if result.cad_lost == exp.cad_lost else "NOT as expected"
    emit(
        f"done: CAD lost = {str(result.cad_lost).lower()} (expected {str(exp.cad_lost).lower()}, {verdict}); "
        f"outages {', '.join(f'{o:.1f}s' for o in result.outages()) or 'none'}; "
        f"expected layer {exp.layer}, page {str(exp.page).lower()}"
    )
    return result


def _details(event: dict[str, Any]) -> str:
    keys = ("reason", "outage_s", "server")
    return " ".join(f"{k}={event[k]}" for k in keys if k in event)


def _do(lab: Lab, step: Step) -> None:
    if step.impairment is not None:
        impair.apply(lab, step.impairment)
    elif step.action == "load":
        lab.start_upload(step.seconds)
    else:
        impair.clear(lab, step.link, step.kind)
