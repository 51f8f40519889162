"""The ``[board]`` table."""

from __future__ import annotations

from dataclasses import dataclass

from lifeline_wire.tomlcfg import Section


@dataclass(frozen=True, slots=True)
class BoardConfig:
    # Grafana's base URL: each position page links to its dashboard there ("" → no link).
    grafana_url: str = ""


def read_board(section: Section) -> BoardConfig:
    grafana_url = section.text("grafana_url", "", pattern=r"(https?://[^\s/]+(/\S*)?)?")
    section.finish()
    return BoardConfig(grafana_url=grafana_url.rstrip("/"))
