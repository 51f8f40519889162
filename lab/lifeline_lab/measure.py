"""Ground truth measurements with fping (always with ``-t``: without it fping uses the period
as the timeout and reports false loss)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lifeline_lab.errors import LabError

if TYPE_CHECKING:
    from lifeline_lab.topology import Lab


@dataclass(frozen=True, slots=True)
class PingResult:
    """Per-echo RTTs in milliseconds, None for a lost echo."""

    target: str
    rtts: tuple[float | None, ...]

    @property
    def sent(self) -> int:
        return len(self.rtts)

    @property
    def received(self) -> tuple[float, ...]:
        return tuple(r for r in self.rtts if r is not None)

    @property
    def loss(self) -> float:
        return 1.0 - len(self.received) / self.sent if self.sent else 1.0

    @property
    def median(self) -> float | None:
        return statistics.median(self.received) if self.received else None

    def percentile(self, p: float) -> float | None:
        values = sorted(self.received)
        if not values:
            return None
        return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


def parse_fping_c(text: str) -> PingResult:
    """Parse one line of ``fping -C N -q`` output: ``host : 0.52 0.48 - 0.50``."""
    for line in text.splitlines():
        if " : " not in line:
            continue
        host, _, values = line.partition(" : ")
        rtts = tuple(None if v == "-" else float(v) for v in values.split())
        return PingResult(host.strip(), rtts)
    raise LabError(f"no fping -C result in {text!r}")


def fping(
    lab: Lab, ns: str, target: str, count: int = 100, period_ms: float = 10, timeout_ms: int = 1500
) -> PingResult:
    """``count`` echoes ``period_ms`` apart from namespace ``ns`` to ``target``."""
    argv = ["fping", "-C", str(count), "-p", f"{period_ms:g}", "-i", "1", "-t", str(timeout_ms), "-q", target]
    done = lab.exec(ns, argv, check=False, timeout=count * period_ms / 1000 + timeout_ms / 1000 + 30)
    if done.returncode not in (0, 1):  # 1: some echoes lost; anything else is an error
        raise LabError(f"fping failed ({done.returncode}): {done.stderr.strip()}")
    return parse_fping_c(done.stderr)
