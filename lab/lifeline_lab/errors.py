"""Errors of the home-network lab.

::

    LabError                      base: anything the lab could not do (carries ``what``)
    ├── CommandFailed             a system tool (ip, nft, tc, wg, iptables) exited non-zero;
    │                             carries ``argv``, ``returncode``, ``stderr``, ``namespace``
    ├── LabStateError             no lab with this prefix, a lab already up, a stale state file
    ├── ImpairmentError           an impairment that does not fit the lab (unknown link, bad value)
    └── ScenarioError             a scenario file that does not load (wraps every ConfigError line)

The CLI maps ``ImpairmentError`` and ``ScenarioError`` to exit code 2 (usage), the rest to 1.
"""

from __future__ import annotations

from collections.abc import Sequence


class LabError(Exception):
    """Base class: the lab could not do what was asked."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


class CommandFailed(LabError):
    """A system tool exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, namespace: str = "") -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.namespace = namespace
        where = f" in {namespace}" if namespace else ""
        super().__init__(f"{' '.join(self.argv)}{where} exited {returncode}: {self.stderr}")


class LabStateError(LabError):
    """The lab is not in the state the command needs (not up, already up, stale)."""


class ImpairmentError(LabError):
    """An impairment that cannot be applied: unknown link or kind, value out of range."""


class ScenarioError(LabError):
    """A scenario file that does not load; ``problems`` holds ``(dotted path, reason)`` pairs."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {path}: {reason}" for path, reason in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")
