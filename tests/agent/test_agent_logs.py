"""Log lines carry bound context, as text or as JSON objects."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from lifeline_agent.logs import bind, configure


@pytest.fixture
def agent_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("lifeline_agent.test_logs")
    yield logger
    root = logging.getLogger("lifeline_agent")
    for handler in [h for h in root.handlers if getattr(h, "_lifeline", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.NOTSET)


def test_json_lines_carry_context(agent_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure("debug", "json", stream)
    bind(agent_logger, probe="icmp", target="gw-eth0").warning(
        "target %s", "down", extra={"reason": "timeout"}
    )
    line = json.loads(stream.getvalue())
    assert line["msg"] == "target down"
    assert line["level"] == "warning"
    assert (line["probe"], line["target"], line["reason"]) == ("icmp", "gw-eth0", "timeout")


def test_text_lines_carry_context_and_level_filters(agent_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure("info", "text", stream)
    log = bind(agent_logger, target="cad")
    log.debug("hidden")
    log.info("shown")
    text = stream.getvalue()
    assert "hidden" not in text
    assert "shown [target=cad]" in text
