"""The systemd units pass systemd-analyze verify and carry the privileges and hardening we promise.

systemd-analyze verify needs every ExecStart binary to exist. The units name the install layout
(/opt/lifeline/venv/bin/...), which does not exist on a build machine, so the test verifies a
temporary copy whose ExecStart points at this checkout's .venv/bin instead; nothing else changes.
(`--root=` was tried: it needs a whole systemd tree, sysinit.target and all, under the root.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_BIN = "/opt/lifeline/venv/bin/"
VENV_BIN = ROOT / ".venv" / "bin"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def directives(unit: Path) -> dict[str, list[str]]:
    """key -> values of [Service]/[Unit]/[Install] (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def local_copy(unit: Path, into: Path, edit: tuple[str, str] | None = None) -> Path:
    text = unit.read_text(encoding="utf-8")
    exec_start = f"\nExecStart={INSTALLED_BIN}"
    assert text.count(exec_start) == 1, f"{unit.name}: expected one ExecStart under {INSTALLED_BIN}"
    text = text.replace(exec_start, f"\nExecStart={VENV_BIN}/")
    if edit:
        assert edit[0] in text
        text = text.replace(*edit)
    copy = into / unit.name
    copy.write_text(text, encoding="utf-8")
    return copy


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("name", ["lifeline-agent.service", "lifeline-collector.service"])
def test_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    binary = VENV_BIN / name.removesuffix(".service")
    assert binary.exists(), f"{binary}: install the project (make venv) first"
    done = verify(local_copy(UNITS / name, tmp_path))
    # verify exits 0 even for unknown keys and bad values, but says so: any output is a failure.
    assert done.returncode == 0, done.stderr
    assert not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_verify_would_notice_a_bad_value(tmp_path: Path) -> None:
    copy = local_copy(
        UNITS / "lifeline-agent.service", tmp_path, ("ProtectSystem=strict", "ProtectSystem=mostly")
    )
    done = verify(copy)
    assert "protect system value" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "threshold"), [("lifeline-agent.service", 25), ("lifeline-collector.service", 20)]
)
def test_hardening_exposure_stays_low(tmp_path: Path, name: str, threshold: int) -> None:
    # systemd's own exposure score (0 best .. 10 worst, printed x10 for --threshold): "OK" is < 5.
    copy = local_copy(UNITS / name, tmp_path)
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", f"--threshold={threshold}", "--no-pager", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_agent_unit_privileges_and_spool() -> None:
    unit = directives(UNITS / "lifeline-agent.service")
    assert unit["ExecStart"] == [
        "/opt/lifeline/venv/bin/lifeline-agent run --config /etc/lifeline/agent.toml"
    ]
    assert unit["DynamicUser"] == ["yes"]
    assert set(unit["AmbientCapabilities"][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(unit["CapabilityBoundingSet"][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert unit["StateDirectory"] == ["lifeline-agent"]
    assert unit["Restart"] == ["always"]
    assert unit["LoadCredential"] == ["token:/etc/lifeline/agent.token"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    }.items():  # fmt: skip
        assert unit[key] == [value], key
    # Nothing writable beyond the state directory.
    assert "ReadWritePaths" not in unit


def test_collector_unit_runs_unprivileged() -> None:
    unit = directives(UNITS / "lifeline-collector.service")
    assert unit["ExecStart"] == [
        "/opt/lifeline/venv/bin/lifeline-collector serve --config /etc/lifeline/collector.toml"
    ]
    assert unit["User"] == ["lifeline-collector"]
    assert unit["StateDirectory"] == ["lifeline-collector"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["AmbientCapabilities"] == [""]
    assert unit["Restart"] == ["always"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"]


def test_collector_user_from_sysusers(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-sysusers", "--dry-run", f"--root={tmp_path}", str(UNITS / "lifeline-collector.sysusers")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Creating user 'lifeline-collector'" in done.stdout + done.stderr
    # --dry-run writes nothing into the root.
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("program", "command"), [("lifeline-agent", "run"), ("lifeline-collector", "serve")])
def test_exec_start_matches_the_cli(program: str, command: str) -> None:
    done = subprocess.run(
        [str(VENV_BIN / program), command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout
