"""The [remote_write] table: defaults, every key, and all errors at once with their paths."""

from __future__ import annotations

import tomllib

import pytest

from lifeline_collector.remote_write.config import RemoteWriteConfig, read_remote_write
from lifeline_wire.tomlcfg import ConfigError, Section, build


def _read(text: str) -> RemoteWriteConfig:
    return build(
        "collector.toml", tomllib.loads(text), lambda root: read_remote_write(root.table("remote_write"))
    )


def test_absent_table_means_disabled() -> None:
    config = _read("")
    assert config == RemoteWriteConfig()
    assert not config.enabled
    assert not config.durable


def test_every_key_is_read() -> None:
    config = _read(
        """
        [remote_write]
        url = "https://tsdb.agency.example:9090/api/v1/write"
        timeout = "5s"
        bearer_token_file = "/etc/lifeline/tsdb.token"
        headers = { X-Scope-OrgID = "dispatch" }
        max_samples_per_send = 500
        batch_wait = "250ms"
        queue_max_samples = 5000
        min_backoff = "100ms"
        max_backoff = "10s"
        retry_limit = "2m"
        cursor_file = "/var/lib/lifeline/remote_write.cursor"
        """
    )
    assert config == RemoteWriteConfig(
        url="https://tsdb.agency.example:9090/api/v1/write",
        timeout=5.0,
        bearer_token_file="/etc/lifeline/tsdb.token",
        headers=(("X-Scope-OrgID", "dispatch"),),
        max_samples_per_send=500,
        batch_wait=0.25,
        queue_max_samples=5000,
        min_backoff=0.1,
        max_backoff=10.0,
        retry_limit=120.0,
        cursor_file="/var/lib/lifeline/remote_write.cursor",
    )
    assert config.enabled
    assert config.durable


def test_all_problems_are_reported_together_with_their_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        _read(
            """
            [remote_write]
            url = "tsdb:9090"
            timeout = "fast"
            bearer_token_file = "/t"
            basic_auth_username = "lifeline"
            headers = { Content-Type = "text/plain", X-Ok = 3 }
            max_samples_per_send = 0
            min_backoff = "2s"
            max_backoff = "1s"
            max_sampels_per_send = 10
            """
        )
    paths = {path for path, _ in caught.value.problems}
    assert paths == {
        "remote_write.url",
        "remote_write.timeout",
        "remote_write.bearer_token_file",
        "remote_write.basic_auth_username",
        "remote_write.headers.Content-Type",
        "remote_write.headers.X-Ok",
        "remote_write.max_samples_per_send",
        "remote_write.max_backoff",
        "remote_write.max_sampels_per_send",
    }
    reasons = dict(caught.value.problems)
    assert reasons["remote_write.max_sampels_per_send"] == "unknown key"
    assert "not both" in reasons["remote_write.bearer_token_file"]


def test_queue_smaller_than_a_batch_and_cursor_without_url_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _read('[remote_write]\nmax_samples_per_send = 100\nqueue_max_samples = 10\ncursor_file = "/c"\n')
    assert {path for path, _ in caught.value.problems} == {
        "remote_write.queue_max_samples",
        "remote_write.cursor_file",
    }


def test_reader_works_on_a_section_given_by_the_collector_config() -> None:
    from lifeline_wire.tomlcfg import Problems

    problems = Problems()
    section = Section({"url": "http://127.0.0.1:9090/api/v1/write"}, "remote_write", problems)
    assert read_remote_write(section).url == "http://127.0.0.1:9090/api/v1/write"
    assert problems.items == []
