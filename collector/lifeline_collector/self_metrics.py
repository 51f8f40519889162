"""The collector's own counters (ingest results, notifications), exposed on /metrics."""

from __future__ import annotations

from collections import Counter


class Stats:
    def __init__(self) -> None:
        self.batches: Counter[str] = Counter()  # result → batches
        self.requests: Counter[str] = Counter()  # HTTP status code → requests
        self.notifications: Counter[tuple[str, str]] = Counter()  # (notifier, result) → count
        # (agent, reason) → requests or batches refused (authenticated agents only: bounded)
        self.rejected: Counter[tuple[str, str]] = Counter()

    def batch(self, result: str) -> None:
        self.batches[result] += 1

    def request(self, code: int) -> None:
        self.requests[str(code)] += 1

    def reject(self, agent: str, reason: str) -> None:
        self.rejected[(agent, reason)] += 1

    def notification(self, notifier: str, result: str) -> None:
        self.notifications[(notifier, result)] += 1
