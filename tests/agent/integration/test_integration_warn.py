"""The dispatcher's warning: logged, rate-limited, and raised through a real notify-send process."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from lifeline_agent.warn import CLEARED, Warner, session_bus


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now


def fake_notify_send(tmp_path: Path) -> Path:
    """A stand-in for the desktop's notify-send: a real executable that appends its argv to a file."""
    log = tmp_path / "notifications.log"
    script = tmp_path / "bin" / "notify-send"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$DBUS_SESSION_BUS_ADDRESS|$2|$4" >> "{log}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def test_session_bus_from_the_environment_or_the_user_runtime_dir(tmp_path: Path) -> None:
    assert session_bus({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"}, 1000) == "unix:path=/x"
    assert session_bus({}, 1000, run_user=str(tmp_path)) == ""
    (tmp_path / "1000").mkdir()
    (tmp_path / "1000" / "bus").touch()
    assert session_bus({}, 1000, run_user=str(tmp_path)) == f"unix:path={tmp_path}/1000/bus"


def test_warning_is_logged_notified_once_and_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifications = fake_notify_send(tmp_path)
    clock = FakeClock()
    env = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus", "PATH": str(tmp_path / "bin")}
    first = "Your CAD connection is failing — VPN tunnel down. Switch to the hotspot or call the floor."
    second = "Your CAD connection is failing — CAD server not answering. Call the floor now."

    async def main() -> Warner:
        warner = Warner(clock=clock, environ=env, min_gap=30.0, repeat_after=300.0)
        assert warner.check()
        warner.update(None)  # nothing to say: nothing said
        warner.update(first)
        warner.update(first)  # the same warning a second later: not repeated
        clock.now += 5
        warner.update(second)  # changed, but within the gap: logged now, notified later
        await warner.aclose()
        clock.now += 30
        warner.update(second)  # gap over: the pending notification goes out
        clock.now += 300
        warner.update(second)  # a reminder after repeat_after
        await warner.aclose()
        clock.now += 300
        warner.update(None)
        await warner.aclose()
        return warner

    with caplog.at_level(logging.INFO, logger="lifeline_agent.warn"):
        warner = asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [
        f"dispatcher warning: {first}",
        f"dispatcher warning: {second}",
        f"dispatcher warning: {second}",
    ]
    lines = notifications.read_text().splitlines()
    assert lines == [
        f"unix:path=/run/user/1000/bus|--urgency=critical|{first}",
        f"unix:path=/run/user/1000/bus|--urgency=critical|{second}",
        f"unix:path=/run/user/1000/bus|--urgency=critical|{second}",
        f"unix:path=/run/user/1000/bus|--urgency=normal|{CLEARED}",
    ]
    assert warner.status() == {
        "text": None,
        "since_ms": 0,
        "desktop": "notify-send",
        "desktop_unavailable": "",
    }


def test_without_a_session_bus_it_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_notify_send(tmp_path)
    warner = Warner(environ={"PATH": str(tmp_path / "bin")}, uid=os.getuid() + 4242)
    with caplog.at_level(logging.INFO, logger="lifeline_agent.warn"):
        assert not warner.check()
        warner.update("Your CAD connection is failing — home router unreachable. Call the floor.")
    assert warner.desktop_reason == "no desktop session bus for this user"
    assert sum("no desktop notifications" in r.getMessage() for r in caplog.records) == 1
    status = warner.status()
    assert status["text"].startswith("Your CAD connection is failing")
    assert status["desktop_unavailable"] == "no desktop session bus for this user"
