"""Runs one probe round for one target and turns its result into catalog metrics and events.

The runner, not the probe, measures duration, keeps the per-target state across rounds (RFC 3550
jitter, consecutive failures, cumulative counters), and is the one place that catches any
exception a probe raises, so a bug in one probe never stops the agent. Other modules subscribe to
every result (the health model hangs there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.config import Target
from lifeline_agent.logs import BoundLogger, bind
from lifeline_agent.probes import REGISTRY, ProbeContext, ProbeResult, ProbeSpec
from lifeline_agent.probes.stats import JitterEstimator, mos
from lifeline_agent.recorder import Recorder

log = logging.getLogger(__name__)

# Extra time a probe gets past its own timeout before the runner cancels it.
DEADLINE_GRACE = 0.5


@dataclass(slots=True)
class TargetState:
    """What the runner remembers about one target between rounds."""

    target: Target
    jitter: JitterEstimator = field(default_factory=JitterEstimator)
    consecutive_failures: int = 0
    sent_total: int = 0
    received_total: int = 0
    rounds: int = 0
    last: ProbeResult | None = None
    last_ms: int = 0
    up: bool | None = None  # None until the first round
    changed: bool = False  # the last round flipped up ↔ down
    # Made once per target rather than every round: its sample labels (one per RTT stat) and logger.
    labels: dict[str, str] = field(init=False)
    stat_labels: dict[str, dict[str, str]] = field(init=False)
    logger: BoundLogger = field(init=False)

    def __post_init__(self) -> None:
        self.labels = target_labels(self.target)
        self.stat_labels = {stat: {**self.labels, "stat": stat} for stat in ("min", "avg", "max")}
        self.logger = bind(log, probe=self.target.kind, target=self.target.name)

    def snapshot(self) -> dict[str, object]:
        """A JSON-friendly view for status.json."""
        t, r = self.target, self.last
        return {
            "name": t.name,
            "role": t.role,
            "path": t.path,
            "kind": t.kind,
            "host": t.host,
            "port": t.port,
            "interface": t.interface,
            "discovered": t.discovered,
            "up": self.up,
            "reason": r.reason if r else "",
            "rtt_avg": r.rtt_avg if r else None,
            "loss": r.loss if r and r.sent else None,
            "jitter": self.jitter.jitter if self.jitter.primed else None,
            "consecutive_failures": self.consecutive_failures,
            "rounds": self.rounds,
            "last_ms": self.last_ms,
        }


ResultHook = Callable[[Target, ProbeResult, TargetState], None]


def target_labels(target: Target) -> dict[str, str]:
    return {"target": target.name, "role": target.role, "path": target.path, "kind": target.kind}


def round_deadline(target: Target) -> float:
    """How long one round may take: every echo sent, then the timeout for the last one."""
    return target.spacing * (target.count - 1) + target.timeout


class ProbeRunner:
    def __init__(
        self,
        recorder: Recorder,
        clock: Clock | None = None,
        registry: Mapping[str, ProbeSpec] = REGISTRY,
    ) -> None:
        self.recorder = recorder
        self.clock = clock or SystemClock()
        self.registry = registry
        self.states: dict[str, TargetState] = {}
        self._hooks: list[ResultHook] = []
        self.probe_errors = 0

    def subscribe(self, hook: ResultHook) -> None:
        """Call ``hook(target, result, state)`` after every round (state already updated)."""
        self._hooks.append(hook)

    def state(self, target: Target) -> TargetState:
        state = self.states.get(target.name)
        if state is None or state.target != target:
            state = self.states[target.name] = TargetState(target)
        return state

    async def run_once(self, target: Target) -> ProbeResult:
        state = self.state(target)
        logger = state.logger
        spec = self.registry.get(target.kind)
        started = self.clock.monotonic()
        budget = round_deadline(target)
        if spec is None:
            result = ProbeResult(False, "unsupported", detail=f"no probe registered for kind {target.kind!r}")
        else:
            ctx = ProbeContext(logger=logger, deadline=started + budget, clock=self.clock)
            try:
                # A timeout on this task, not wait_for: no extra task and timer hand-offs per round.
                async with asyncio.timeout(budget + DEADLINE_GRACE):
                    result = await spec.run(target, ctx)
            except TimeoutError:
                logger.warning("probe overran its deadline of %.3fs and was cancelled", budget)
                result = ProbeResult(False, "deadline", sent=target.count, detail="overran its deadline")
            except Exception as exc:  # the one broad except: a probe bug must not stop the agent
                self.probe_errors += 1
                logger.exception("probe raised; counted as a failed round")
                result = ProbeResult(False, "error", detail=f"{type(exc).__name__}: {exc}")
        result = dataclasses.replace(
            result,
            duration=self.clock.monotonic() - started,
            jitter=state.jitter.update_many(result.rtts) if state.jitter.primed or result.received else None,
        )
        self._account(target, result, state)
        for hook in list(self._hooks):
            hook(target, result, state)
        return result

    def _account(self, target: Target, result: ProbeResult, state: TargetState) -> None:
        ts = now_ms(self.clock)
        was_up = state.up
        state.rounds += 1
        state.last, state.last_ms, state.up = result, ts, result.success
        state.changed = was_up is not None and was_up != result.success
        state.sent_total += result.sent
        state.received_total += result.received
        state.consecutive_failures = 0 if result.success else state.consecutive_failures + 1

        labels = state.labels
        rec = self.recorder
        rec.sample("lifeline_probe_success", 1.0 if result.success else 0.0, labels, ts)
        rec.sample("lifeline_probe_duration_seconds", result.duration, labels, ts)
        # A round that could not even send (no route, no permission) lost everything it meant to send.
        loss = result.loss if result.sent else (0.0 if result.success else 1.0)
        rec.sample("lifeline_probe_loss_ratio", loss, labels, ts)
        rec.sample("lifeline_probe_packets_sent_total", state.sent_total, labels, ts)
        rec.sample("lifeline_probe_packets_received_total", state.received_total, labels, ts)
        rec.sample("lifeline_probe_consecutive_failures", state.consecutive_failures, labels, ts)
        if result.jitter is not None:
            rec.sample("lifeline_probe_jitter_seconds", result.jitter, labels, ts)
        stat_values = (("min", result.rtt_min), ("avg", result.rtt_avg), ("max", result.rtt_max))
        for stat, value in stat_values:
            if value is None:
                rec.forget("lifeline_probe_rtt_seconds", state.stat_labels[stat])
            else:
                rec.sample("lifeline_probe_rtt_seconds", value, state.stat_labels[stat], ts)
        if target.kind == "icmp":
            if result.rtt_avg is None:
                rec.forget("lifeline_probe_mos", labels)
            else:
                score = mos(result.rtt_avg, result.jitter or 0.0, result.loss)
                rec.sample("lifeline_probe_mos", score, labels, ts)

        if state.changed:
            rec.event(
                "probe.state_change",
                {
                    **labels,
                    "state": "up" if result.success else "down",
                    "reason": result.reason,
                    "consecutive_failures": state.consecutive_failures,
                },
                ts,
            )
            state.logger.log(
                logging.INFO if result.success else logging.WARNING,
                "target %s%s",
                "up" if result.success else "down",
                "" if result.success else f" ({result.reason})",
            )
