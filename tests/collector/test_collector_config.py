"""Collector config: each invalid file's message, every deploy example loads, check-config exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lifeline_collector.cli import main
from lifeline_collector.config import CollectorConfig, load
from lifeline_wire.tomlcfg import ConfigError

TESTDATA = Path(__file__).parent / "testdata"
DEPLOY = Path(__file__).parents[2] / "deploy"
INVALID = sorted(TESTDATA.glob("invalid-*.toml"))


def expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ")
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def test_there_are_invalid_files() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_names_the_key(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    wanted = expected(path)
    assert wanted, f"{path.name} has no '# expect:' line"
    for line in wanted:
        assert line in message
    assert len(caught.value.problems) == len(wanted)


def test_defaults() -> None:
    config = load_text("")
    assert config.server.listen == "127.0.0.1:8480"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8480)
    assert config.server.max_body_bytes == 4 * 1024 * 1024
    assert config.store.path == "/var/lib/lifeline-collector/lifeline.db"
    assert (config.alerting.cad_failures, config.alerting.silent_after) == (4, 15.0)
    assert (config.alerting.evaluate_interval, config.alerting.resend_interval) == (1.0, 60.0)
    assert config.notifiers == ()


def test_token_is_read_from_file_and_kept_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("very-secret-token\n")
    config = load_text(
        f'[[notifiers]]\nkind = "webhook"\nname = "p"\nurl = "http://h/x"\ntoken_file = "{tmp_path / "t"}"\n'
        '[notifiers.headers]\nX-Key = "header-secret"\n'
    )
    (notifier,) = config.notifiers
    assert notifier.token == "very-secret-token"
    assert notifier.request_headers()["Authorization"] == "Bearer very-secret-token"
    assert "very-secret-token" not in repr(config)
    assert "header-secret" not in repr(config)


def test_ipv6_listen() -> None:
    config = load_text('[server]\nlisten = "[::1]:9000"\n')
    assert (config.server.host, config.server.port) == ("::1", 9000)


def load_text(text: str) -> CollectorConfig:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    try:
        return load(handle.name)
    finally:
        Path(handle.name).unlink()


EXAMPLES = sorted(DEPLOY.glob("*collector*.toml"))


def test_there_is_an_example() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_deploy_examples_load(path: Path) -> None:
    config = load(path)
    assert config.server.listen


def test_check_config_exit_codes() -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["check-config", str(EXAMPLES[0])])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output
    bad = runner.invoke(main, ["check-config", str(TESTDATA / "invalid-listen.toml")])
    assert bad.exit_code == 2
    assert "server.listen" in bad.output
    missing = runner.invoke(main, ["check-config", "/nonexistent.toml"])
    assert missing.exit_code == 2
    assert "not found" in missing.output
