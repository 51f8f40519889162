"""Running commands inside the lab's namespaces and owning the long-running ones.

Every process the lab starts is recorded by PID *and* its kernel start time (field 22 of
``/proc/<pid>/stat``), so a later ``lifeline-lab down`` from another shell ends exactly the
processes this lab started — never a recycled PID, never anything matched by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lifeline_lab.errors import CommandFailed, LabError

IP = "ip"


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside network namespace ``ns`` (the root namespace when ``ns`` is empty)."""
    if not ns:
        return list(argv)
    return [IP, "netns", "exec", ns, *argv]


def run(
    ns: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run a short command in ``ns`` and wait; a non-zero exit raises ``CommandFailed``."""
    full = ns_argv(ns, argv)
    done = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise CommandFailed(argv, done.returncode, done.stderr or done.stdout, ns)
    return done


def run_many(jobs: Sequence[tuple[str, Sequence[str], str | None]], timeout: float = 30.0) -> None:
    """Run independent ``(ns, argv, stdin)`` jobs in parallel; raise the first failure."""
    procs = []
    for ns, argv, stdin in jobs:
        proc = subprocess.Popen(
            ns_argv(ns, argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((ns, argv, stdin, proc))
    failure: CommandFailed | None = None
    for ns, argv, stdin, proc in procs:
        out, err = proc.communicate(stdin, timeout=timeout)
        if proc.returncode != 0 and failure is None:
            failure = CommandFailed(argv, proc.returncode, err or out, ns)
    if failure is not None:
        raise failure


@dataclass(frozen=True, slots=True)
class ProcRecord:
    """A long-running process the lab owns."""

    name: str
    ns: str
    argv: tuple[str, ...]
    pid: int
    starttime: int
    log: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcRecord:
        return cls(
            name=str(data["name"]),
            ns=str(data["ns"]),
            argv=tuple(str(a) for a in data["argv"]),
            pid=int(data["pid"]),
            starttime=int(data["starttime"]),
            log=str(data.get("log", "")),
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def start_time(pid: int) -> int:
    stat = _stat(pid)
    return stat[1] if stat else -1


def is_alive(rec: ProcRecord) -> bool:
    """True while the recorded process (same PID *and* start time) runs and is not a zombie."""
    stat = _stat(rec.pid)
    return stat is not None and stat[1] == rec.starttime and stat[0] not in ("Z", "X")


def spawn(
    name: str,
    ns: str,
    argv: Sequence[str],
    log: str,
    *,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
) -> tuple[subprocess.Popen[bytes], ProcRecord]:
    """Start ``argv`` in ``ns`` with stdout and stderr appended to ``log``.

    ``ip netns exec`` execs the command in place, so the PID is the program's own. ``detach``
    starts a new session so the process outlives the CLI command that started it.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ns_argv(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=detach,
        )
    return proc, ProcRecord(name, ns, tuple(argv), proc.pid, start_time(proc.pid), log)


def stop(rec: ProcRecord, popen: subprocess.Popen[bytes] | None = None, grace: float = 2.0) -> None:
    """End one recorded process: SIGTERM, then SIGKILL after ``grace`` seconds; reap it if ours."""
    if popen is not None and popen.poll() is not None:
        return
    if not is_alive(rec):
        if popen is not None:
            popen.wait()
        return
    _signal(rec, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return
        elif not is_alive(rec):
            return
        time.sleep(0.01)
    _signal(rec, signal.SIGKILL)
    if popen is not None:
        popen.wait()
        return
    deadline = time.monotonic() + grace
    while is_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.01)


def _signal(rec: ProcRecord, sig: int) -> None:
    if not is_alive(rec):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec.pid, sig)


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``condition`` until it is true; raise ``LabError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise LabError(f"gave up waiting for {what}: the process exited")
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
