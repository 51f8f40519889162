"""Every example agent config under deploy/ loads, and uses only kinds that have a probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline_agent.config import load
from lifeline_agent.probes import REGISTRY

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLES = sorted(DEPLOY.glob("*agent*.toml"))


def test_there_is_an_example() -> None:
    assert any(p.name == "agent.example.toml" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    config = load(path)
    assert config.agent.id
    for target in config.targets:
        assert target.kind in REGISTRY, f"{path.name}: {target.name} uses kind {target.kind}"
