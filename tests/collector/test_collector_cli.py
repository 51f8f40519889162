"""`lifeline-collector agents add/list/revoke` with click's CliRunner over a real store."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from lifeline_collector.cli import main
from lifeline_collector.store import Store


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "db" / "lifeline.db"}"\n')
    return path


def test_add_list_revoke(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runner = CliRunner()
    added = runner.invoke(
        main, ["agents", "add", "pos-12", "--site", "north", "--position", "12", "--config", str(config)]
    )
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert len(token) >= 43  # token_urlsafe(32)
    assert "shown only now" in added.stderr
    store = Store(str(tmp_path / "db" / "lifeline.db"))
    try:
        row = store.agent_for_token(token)
        assert row is not None
        assert (row.id, row.site, row.position) == ("pos-12", "north", "12")
        assert store.agent_for_token(token + "x") is None
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "db" / "lifeline.db") as db:
        (stored,) = db.execute("SELECT token_hash FROM agents").fetchone()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (tmp_path / "db" / "lifeline.db").read_bytes().decode("latin-1")

    again = runner.invoke(main, ["agents", "add", "pos-12", "--config", str(config)])
    assert again.exit_code == 1
    assert "already exists" in again.output

    listed = runner.invoke(main, ["agents", "list", "--config", str(config)])
    assert listed.exit_code == 0
    assert "pos-12" in listed.output
    assert "north" in listed.output
    assert "never" in listed.output
    assert token not in listed.output

    revoked = runner.invoke(main, ["agents", "revoke", "pos-12", "--config", str(config)])
    assert revoked.exit_code == 0
    assert "pos-12" not in runner.invoke(main, ["agents", "list", "--config", str(config)]).output
    assert "revoked" in runner.invoke(main, ["agents", "list", "--all", "--config", str(config)]).output
    store = Store(str(tmp_path / "db" / "lifeline.db"))
    try:
        assert store.agent_for_token(token) is None
    finally:
        store.close()
    unknown = runner.invoke(main, ["agents", "revoke", "pos-12", "--config", str(config)])
    assert unknown.exit_code == 1
    # A revoked id can be issued a fresh token.
    reissued = runner.invoke(main, ["agents", "add", "pos-12", "--config", str(config)])
    assert reissued.exit_code == 0
    assert reissued.stdout.strip() != token


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runner = CliRunner()
    bad_id = runner.invoke(main, ["agents", "add", "not an id!", "--config", str(config)])
    assert bad_id.exit_code == 2
    assert runner.invoke(main, ["agents", "list", "--config", str(tmp_path / "missing.toml")]).exit_code == 2
    assert runner.invoke(main, ["no-such-command"]).exit_code == 2
    help_text = runner.invoke(main, ["--help"]).output
    for command in ("serve", "agents", "check-config", "quickstart"):
        assert command in help_text
