"""``lifeline-collector users …`` and ``audit``: accounts from the command line, and the trail."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lifeline_collector.cli import main


def _config(tmp_path: Path) -> str:
    path = tmp_path / "collector.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "c.db"}"\n')
    return str(path)


def test_users_add_passwd_disable_and_the_audit_trail_says_who(tmp_path: Path) -> None:
    config = _config(tmp_path)
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = runner.invoke(main, [*args, "--config", config], input=stdin, env={"SUDO_USER": "it-lead"})
        return result.exit_code, result.output

    assert run(
        "users", "add", "ana", "--role", "supervisor", "--password-stdin", stdin="long enough password\n"
    ) == (
        0,
        "user ana added (supervisor)\n",
    )
    code, out = run("users", "add", "bo", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert code == 2
    assert "password: must be at least 12 characters" in out
    code, out = run("users", "add", "ana", "--password-stdin", stdin="another long password\n")
    assert code == 2
    assert "exists" in out
    assert run("users", "passwd", "ana", "--password-stdin", stdin="a new long password\n")[0] == 0
    assert run("users", "role", "ana", "admin")[0] == 0
    assert run("users", "disable", "ana")[0] == 0
    assert run("users", "disable", "nobody")[0] == 1
    code, out = run("users", "list")
    assert code == 0
    assert "ana" in out
    assert "admin" in out
    assert "disabled" in out
    code, out = run("agents", "add", "pos-12", "--site", "north", "--position", "12")
    assert code == 0

    code, out = run("audit", "--format", "json")
    records = json.loads(out)
    assert [(r["actor"], r["action"], r["target"], r["outcome"]) for r in records] == [
        ("it-lead", "agent.add", "pos-12", "success"),
        ("it-lead", "user.disable", "nobody", "failure"),
        ("it-lead", "user.disable", "ana", "success"),
        ("it-lead", "user.role", "ana", "success"),
        ("it-lead", "user.passwd", "ana", "success"),
        ("it-lead", "user.add", "ana", "failure"),
        ("it-lead", "user.add", "ana", "success"),
    ]
    assert all(r["address"].startswith("cli@") for r in records)
    code, out = run("audit", "--target", "pos-12", "--format", "csv")
    assert out.splitlines()[0] == "id,at,actor,action,target,address,outcome,detail"
    assert len(out.splitlines()) == 2
    code, out = run("audit", "--action", "user.role")
    assert code == 0
    assert "user.role" in out
    assert "it-lead" in out
    assert run("audit", "--since", "last tuesday")[0] == 2
