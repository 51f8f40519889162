"""The pause every agent loop waits in."""

from __future__ import annotations

import asyncio

from lifeline_agent.clock import pause


def test_pause_ends_at_its_delay_or_when_stopped() -> None:
    async def main() -> tuple[bool, bool]:
        stop = asyncio.Event()
        await pause(stop, 0.01)  # nobody stops it: the delay ends it
        timed_out = not stop.is_set()
        waiting = asyncio.create_task(pause(stop, 3600))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(waiting, timeout=10)
        await asyncio.wait_for(pause(stop, 3600), timeout=10)  # already stopped: returns at once
        return timed_out, waiting.done()

    assert asyncio.run(main()) == (True, True)
