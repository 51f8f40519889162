"""Config table test: every tests/agent/testdata/invalid-*.toml maps to exactly its messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline_agent.config import ConfigError, load

TESTDATA = Path(__file__).parent / "testdata"

EXPECTED: dict[str, list[str]] = {
    "invalid-missing-id.toml": ["agent.id: is required"],
    "invalid-bad-agent-id.toml": ["agent.id: must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} (got 'ws 12!')"],
    "invalid-interval-too-short.toml": ["targets[0].interval: must be ≥ 100ms (got '10ms')"],
    "invalid-unknown-key.toml": ["targets[0].intervall: unknown key"],
    "invalid-tcp-without-port.toml": ['targets[0].port: is required for kind = "tcp"'],
    "invalid-bad-role.toml": [
        "targets[0].role: must be one of link, router, internet, vpn, dns, cad (got 'modem')"
    ],
    "invalid-duplicate-name.toml": ["targets[1].name: duplicate name 'cad' (also targets[0])"],
    "invalid-public-endpoint.toml": [
        "collector.endpoints[0].public: a public endpoint reports outside the VPN; "
        "set collector.allow_public = true once the agency approves"
    ],
    "invalid-burst-too-long.toml": [
        "targets[0].count: 50 echoes 0.05s apart plus a 1s timeout do not fit in the 1s interval"
    ],
    "invalid-bad-duration.toml": [
        """targets[0].timeout: must be a duration such as "1s" or "250ms" (got 'soon')"""
    ],
    "invalid-endpoint-url.toml": [
        "collector.endpoints[0].url: must start with http:// or https:// (got 'ftp://lifeline.agency.internal')"
    ],
    "invalid-threshold-order.toml": ["thresholds.rtt_degraded: must not exceed rtt_critical (0.4 > 0.3)"],
    "invalid-token-twice.toml": ["agent.token: set either token or token_file, not both"],
    "invalid-many-problems.toml": [
        "agent.id: is required",
        "agent.site: must be a string (got 12)",
        "schedule.batch_interval: must be ≥ 500ms (got '100ms')",
        "targets[0].role: is required (one of link, router, internet, vpn, dns, cad)",
        'targets[0].port: is required for kind = "tcp"',
    ],
    # The parser's own wording after the location may change between Python versions.
    "invalid-syntax.toml": ["(syntax): *"],
}


def test_every_invalid_file_has_an_expectation() -> None:
    on_disk = {p.name for p in TESTDATA.glob("invalid-*.toml")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_config_reports_every_problem(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(TESTDATA / name)
    got = [f"{path}: {reason}" for path, reason in caught.value.problems]
    expected = EXPECTED[name]
    assert len(got) == len(expected), got
    for line, want in zip(got, expected, strict=True):
        if want.endswith("*"):
            assert line.startswith(want[:-1]), line
        else:
            assert line == want


def test_minimal_config_gets_documented_defaults() -> None:
    config = load(TESTDATA / "valid-minimal.toml")
    assert config.agent.id == "ws-1"
    assert config.metrics.listen == "127.0.0.1:9464"
    assert config.schedule.batch_interval == 5.0
    assert config.spool_path == "/var/lib/lifeline-agent/spool.db"
    assert config.targets == ()
