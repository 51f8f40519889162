"""When a position was last heard, and from when its silence counts.

An agent that speaks heartbeats (a tiny datagram every fraction of a second over every path it
has) is silent once no valid beat — and no batch — arrived for ``heartbeat_after``: seconds, not
the batch-based ``silent_after`` that older agents, which never sent a beat to this collector,
still fall under. Silence is counted from the collector's start at the earliest, so a restart
pages nobody.

``SilenceWatch`` finds the positions whose silence began without sweeping the fleet: each agent
has one deadline in a heap (when it turns silent if nothing more is heard); a check pops only the
deadlines that passed, and an agent heard meanwhile is pushed back with its new deadline. With
10,000 agents beating, each is popped about once per ``heartbeat_after``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lifeline_collector.fleet import AgentView


def last_heard(agent: AgentView) -> float | None:
    """The later of the last batch and the last heartbeat (None: never heard)."""
    return agent.last_heard


@dataclass(frozen=True, slots=True)
class SilencePolicy:
    silent_after: float  # batch-based: agents that never sent this collector a heartbeat
    heartbeat_after: float  # agents that speak heartbeats
    started_at: float = float("-inf")  # the collector's start: silence is counted from it at the earliest

    def threshold(self, agent: AgentView) -> float:
        return self.silent_after if agent.last_beat is None else self.heartbeat_after

    def deadline(self, agent: AgentView) -> float | None:
        """When the agent turns silent unless it is heard before (None: never heard, or signed
        off — it said it stops on purpose, so its silence is not an outage)."""
        heard = last_heard(agent)
        if heard is None or agent.signed_off is not None:
            return None
        return max(heard, self.started_at) + self.threshold(agent)

    def silent(self, agent: AgentView, now: float) -> bool:
        deadline = self.deadline(agent)
        return deadline is not None and now >= deadline

    def up(self, agent: AgentView, now: float) -> bool:
        """Heard within its threshold (a fact for ``lifeline_agent_up``: no restart grace)."""
        heard = last_heard(agent)
        return heard is not None and now - heard < self.threshold(agent)

    def silent_for(self, agent: AgentView, now: float) -> float | None:
        """Seconds since the agent was last heard, if it counts as silent now; else None."""
        heard = last_heard(agent)
        if heard is None or not self.silent(agent, now):
            return None
        return now - heard


class SilenceWatch:
    """A heap of (deadline, agent): ``due`` returns the agents whose silence has begun."""

    def __init__(self, policy: SilencePolicy) -> None:
        self.policy = policy
        self._heap: list[tuple[float, str]] = []
        self._deadline: dict[str, float] = {}  # agent → its deadline in the heap (others are stale)

    def __len__(self) -> int:
        return len(self._deadline)

    def watch(self, agent: AgentView) -> None:
        """(Re)schedule ``agent`` at its current deadline; an earlier entry stays until it is popped."""
        deadline = self.policy.deadline(agent)
        if deadline is None:
            return
        known = self._deadline.get(agent.id)
        if known is not None and known <= deadline:
            return  # the earlier entry pops first and is pushed back then, from the view
        self._deadline[agent.id] = deadline
        heapq.heappush(self._heap, (deadline, agent.id))

    def watch_all(self, agents: Iterable[AgentView]) -> None:
        for agent in agents:
            self.watch(agent)

    def due(self, now: float, view: Callable[[str], AgentView | None]) -> list[AgentView]:
        """The agents that turned silent by ``now`` (each reported once per silence)."""
        out: list[AgentView] = []
        heap, deadlines = self._heap, self._deadline
        while heap and heap[0][0] <= now:
            _deadline, agent_id = heapq.heappop(heap)
            if deadlines.get(agent_id) != _deadline:
                continue  # superseded by an earlier push
            del deadlines[agent_id]
            agent = view(agent_id)
            if agent is None:
                continue  # revoked
            deadline = self.policy.deadline(agent)
            if deadline is None:
                continue
            if deadline <= now:
                out.append(agent)  # silent: it is scheduled again when heard (``watch``)
            else:
                deadlines[agent_id] = deadline
                heapq.heappush(heap, (deadline, agent_id))
        return out
