"""The dispatcher's local warning: the log, status.json, and a desktop notification.

Everything here is local, so the telecommunicator is warned even when the collector cannot be
reached — exactly when it matters. A new or changed warning is logged at WARNING and raised as a
desktop notification (``notify-send``) when a session bus is reachable; the same warning is
repeated at most every ``repeat_after`` seconds, and notifications are spaced by ``min_gap``.
Without a session bus the agent says so once, and the warning still reaches ``lifeline-agent
status`` and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lifeline_agent.clock import Clock, SystemClock, now_ms

log = logging.getLogger(__name__)

TITLE = "Lifeline: CAD connection"
CLEARED = "Your CAD connection is healthy again."
NOTIFY_TIMEOUT = 5.0


def session_bus(environ: Mapping[str, str], uid: int, run_user: str = "/run/user") -> str:
    """The D-Bus session bus address to notify on, or "" when this process has none."""
    address = environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    path = os.path.join(run_user, str(uid), "bus")
    return f"unix:path={path}" if os.path.exists(path) else ""


@dataclass
class Warner:
    """Feed it every assessment's warning with :meth:`update`; it decides what to say and when."""

    desktop: bool = True
    clock: Clock = field(default_factory=SystemClock)
    repeat_after: float = 300.0
    min_gap: float = 30.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    uid: int = field(default_factory=os.getuid)
    notify_command: str = "notify-send"
    text: str | None = None
    since_ms: int = 0
    notified: int = 0  # desktop notifications raised
    desktop_reason: str = ""  # why there is no desktop notification ("" when there is)
    _bus: str = ""
    _command: str = ""
    _last_notify: float | None = None
    _last_said: float | None = None
    _pending: str | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def check(self) -> bool:
        """Find the session bus and notify-send once (at start); logs once if there is none."""
        if not self.desktop:
            self.desktop_reason = "off in [providers]"
            return False
        self._bus = session_bus(self.environ, self.uid)
        self._command = shutil.which(self.notify_command, path=self.environ.get("PATH")) or ""
        if not self._bus:
            self.desktop_reason = "no desktop session bus for this user"
        elif not self._command:
            self.desktop_reason = f"{self.notify_command} is not installed"
        if self.desktop_reason:
            log.info(
                "no desktop notifications (%s): warnings go to the log and `lifeline-agent status`",
                self.desktop_reason,
            )
            return False
        return True

    def update(self, text: str | None) -> None:
        """The warning of the latest assessment (None when there is nothing to do)."""
        now = self.clock.monotonic()
        if text == self.text:
            if (
                text is not None
                and self._last_said is not None
                and now - self._last_said >= self.repeat_after
            ):
                self._say(text, now, repeat=True)
            elif self._pending is not None:
                self._notify(self._pending, now)
            return
        previous, self.text = self.text, text
        self.since_ms = now_ms(self.clock)
        if text is None:
            log.info("dispatcher warning cleared (was: %s)", previous)
            self._pending = None
            self._notify(CLEARED, now, urgency="normal")
            return
        self._say(text, now, repeat=False)

    def _say(self, text: str, now: float, repeat: bool) -> None:
        self._last_said = now
        log.warning("dispatcher warning: %s", text, extra={"repeat": repeat})
        self._notify(text, now)

    def _notify(self, text: str, now: float, urgency: str = "critical") -> None:
        if not self._bus or not self._command:
            return
        if self._last_notify is not None and now - self._last_notify < self.min_gap:
            self._pending = None if text == CLEARED else text  # said once the gap has passed
            return
        self._pending = None
        self._last_notify = now
        self.notified += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._send(text, urgency))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, text: str, urgency: str) -> None:
        env = {**self.environ, "DBUS_SESSION_BUS_ADDRESS": self._bus}
        try:
            proc = await asyncio.create_subprocess_exec(
                self._command,
                "--app-name=Lifeline",
                f"--urgency={urgency}",
                TITLE,
                text,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("desktop notification failed: %s", exc.strerror)
            return
        try:
            _out, err = await asyncio.wait_for(proc.communicate(), NOTIFY_TIMEOUT)
        except TimeoutError:
            err = b"timed out"
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # our own child, by its handle
                await proc.wait()
        if proc.returncode:
            log.warning("desktop notification failed: %s", err.decode(errors="replace").strip()[:200])

    def status(self) -> dict[str, Any]:
        """The warning as status.json shows it."""
        return {
            "text": self.text,
            "since_ms": self.since_ms if self.text else 0,
            "desktop": "" if self.desktop_reason else "notify-send",
            "desktop_unavailable": self.desktop_reason,
        }

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
