"""status.json: written whole, read back."""

from __future__ import annotations

from pathlib import Path

from lifeline_agent.status import read_status, write_json_atomic


def test_status_file_is_compact_json_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_json_atomic(str(path), {"agent": "ws-7", "targets": [{"name": "cad", "up": True}]})
    write_json_atomic(str(path), {"agent": "ws-7", "targets": [], "risk": 0.5})
    assert path.read_text() == '{"agent":"ws-7","targets":[],"risk":0.5}'
    assert read_status(str(tmp_path)) == {"agent": "ws-7", "targets": [], "risk": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temporary file left
