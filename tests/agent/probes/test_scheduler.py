"""The scheduler's jittered start and immediate re-probe."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from lifeline_agent.config import Target
from lifeline_agent.probes import REGISTRY, ProbeContext, ProbeResult, ProbeSpec
from lifeline_agent.probes.runner import ProbeRunner
from lifeline_agent.probes.scheduler import Scheduler, Wake
from lifeline_agent.recorder import Recorder


class CountingProbe:
    def __init__(self) -> None:
        self.calls = 0
        self.ran = asyncio.Event()

    async def __call__(self, target: Target, ctx: ProbeContext) -> ProbeResult:
        self.calls += 1
        self.ran.set()
        return ProbeResult(
            True, sent=1, received=1, rtts=(0.001,), rtt_min=0.001, rtt_avg=0.001, rtt_max=0.001
        )


def test_start_is_jittered_and_poke_probes_at_once() -> None:
    probe = CountingProbe()
    runner = ProbeRunner(
        Recorder(), registry={"counting": ProbeSpec("counting", probe, REGISTRY["tcp"].metrics, "")}
    )
    target = Target(name="cad", role="cad", kind="counting", host="x", interval=3600.0)
    rng = random.Random(7)  # first offset ≈ 1170 s into the hour
    assert random.Random(7).uniform(0, 3600) > 60

    async def main() -> None:
        scheduler = Scheduler((target,), runner, rng=rng)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.1)
        assert probe.calls == 0  # waiting out its random start offset
        for expected in (1, 2):
            probe.ran.clear()
            scheduler.poke(["cad"])
            await asyncio.wait_for(probe.ran.wait(), timeout=10)
            assert probe.calls == expected
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_targets_of_one_interval_share_one_grid_of_ticks() -> None:
    runner = ProbeRunner(Recorder())
    scheduler = Scheduler((), runner, rng=random.Random(3))
    first = scheduler._tick(1.0, 100.0)
    assert 100.0 <= first < 101.0
    # The grid is drawn once: the same moments for every later question.
    assert scheduler._tick(1.0, 100.0) == first
    assert scheduler._tick(1.0, first) == first
    assert scheduler._tick(1.0, first + 0.001) == pytest.approx(first + 1.0)
    assert scheduler._tick(1.0, first + 7.5) == pytest.approx(first + 8.0)
    # A target's slot puts it that share of an interval along the same grid.
    assert scheduler._tick(1.0, first, 0.25) == pytest.approx(first + 0.25)
    assert scheduler._tick(1.0, first + 0.3, 0.25) == pytest.approx(first + 1.25)
    # Another interval draws a phase of its own.
    other = scheduler._tick(5.0, 100.0)
    assert 100.0 <= other < 105.0
    assert scheduler._tick(5.0, other + 0.1) == pytest.approx(other + 5.0)


def _ticking(names: list[str], seed: int) -> tuple[Scheduler, CountingProbe, list[float]]:
    """A scheduler of hourly counting targets, and the list of every tick it chooses, in order."""
    probe = CountingProbe()
    runner = ProbeRunner(
        Recorder(), registry={"counting": ProbeSpec("counting", probe, REGISTRY["tcp"].metrics, "")}
    )
    targets = tuple(
        Target(name=name, role="cad", kind="counting", host="x", interval=3600.0) for name in names
    )
    scheduler = Scheduler(targets, runner, rng=random.Random(seed))
    ticks: list[float] = []
    choose = scheduler._tick

    def recording(interval: float, after: float, slot: float = 0.0) -> float:
        ticks.append(choose(interval, after, slot))
        return ticks[-1]

    scheduler._tick = recording  # type: ignore[method-assign]
    return scheduler, probe, ticks


def test_targets_of_one_interval_take_turns_evenly_over_it() -> None:
    """Eight targets at 1 s probe 125 ms apart, in turn: the probes crossing a layer time its cut
    to a fraction of a second (the health model's crossing hold)."""
    scheduler, _probe, firsts = _ticking([f"t{i}" for i in range(8)], seed=5)

    async def main() -> None:
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(firsts) == 8
    gaps = [b - a for a, b in itertools.pairwise(sorted(firsts))]
    assert gaps == pytest.approx([450.0] * 7)


def test_a_wake_returns_at_its_time_or_at_once_when_poked() -> None:
    async def main() -> tuple[bool, bool, bool]:
        wake = Wake()
        slept = await wake.sleep(0.01)  # nobody poked: the timer ended it
        sleeping = asyncio.create_task(wake.sleep(3600))
        await asyncio.sleep(0)
        wake.set()
        poked = await asyncio.wait_for(sleeping, timeout=10)
        already = await wake.sleep(3600)  # poked before it slept: returns at once
        return slept, poked, already

    assert asyncio.run(main()) == (False, True, True)


def test_a_poked_target_goes_back_to_the_grid() -> None:
    scheduler, probe, ticks = _ticking(["a", "b"], seed=7)

    async def main() -> None:
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.05)
        assert len(ticks) == 2
        assert ticks[1] - ticks[0] == pytest.approx(1800.0)  # two targets: half an interval apart
        probe.ran.clear()
        scheduler.poke(["a"])
        await asyncio.wait_for(probe.ran.wait(), timeout=10)
        await asyncio.sleep(0.05)
        assert probe.calls == 1  # only the poked target, once, then it waits for the shared tick
        # … a tick of the same grid: whole intervals after the first, not "now + interval".
        assert len(ticks) == 3
        steps = (ticks[2] - ticks[0]) / 3600.0  # "a" took the first slot
        assert steps >= 0
        assert steps == pytest.approx(round(steps), abs=1e-9)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
