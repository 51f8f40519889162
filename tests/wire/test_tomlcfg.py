"""The config reader shared by both programs: units, every error at once, unknown keys."""

from __future__ import annotations

import pytest

from lifeline_wire.tomlcfg import ConfigError, Section, build, parse_duration, parse_size


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("1s", 1.0),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        (3, 3.0),
        (0.5, 0.5),
        ("1.5s", 1.5),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["1", "1 week", "-1s", True, None, "s"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "size"), [("100MB", 100_000_000), ("64MiB", 64 * 1024**2), (1024, 1024), ("10", 10)]
)
def test_sizes(raw: object, size: int) -> None:
    assert parse_size(raw) == size


def test_every_problem_is_reported_with_its_path() -> None:
    data = {"server": {"listen": 8080, "typo": 1}, "items": [{"n": "x"}, {"n": 3}], "stray": {}}

    def reader(root: Section) -> list[str]:
        server = root.table("server")
        server.text("listen")
        server.finish()
        out = []
        for item in root.tables("items"):
            out.append(item.text("n"))
            item.finish()
        return out

    with pytest.raises(ConfigError) as info:
        build("test.toml", data, reader)
    assert info.value.problems == [
        ("server.listen", "must be a string (got 8080)"),
        ("server.typo", "unknown key"),
        ("items[1].n", "must be a string (got 3)"),
        ("stray", "unknown key"),
    ]
    assert "4 problem(s)" in str(info.value)


def test_bounds_and_choices() -> None:
    data = {"interval": "10ms", "mode": "fast", "count": 0, "flag": "yes"}

    def reader(root: Section) -> None:
        root.duration("interval", 1.0, min=0.1)
        root.choice("mode", "slow", ("slow", "normal"))
        root.integer("count", 1, min=1)
        root.flag("flag", False)

    with pytest.raises(ConfigError) as info:
        build("x", data, reader)
    assert dict(info.value.problems) == {
        "interval": "must be ≥ 100ms (got '10ms')",
        "mode": "must be one of slow, normal (got 'fast')",
        "count": "must be ≥ 1 (got 0)",
        "flag": "must be true or false (got 'yes')",
    }
