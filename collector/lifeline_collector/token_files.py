"""Machine tokens the collector's config names by file (the admin token, the viewer token).

A token is read once, at config time, and only its hash is kept: the file stays the one place
that holds it, so neither the running process nor a dump of its config carries the secret."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lifeline_wire.tomlcfg import Section

MIN_TOKEN_LENGTH = 16


def token_file_hash(section: Section, key: str) -> str:
    """The SHA-256 of the token in the file ``section[key]`` names ("" when none is named, or when
    the file is unreadable or the token too short: both are reported as errors of ``key``)."""
    token_file = section.text(key)
    if not token_file:
        return ""
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        section.error(key, f"cannot read {token_file} ({exc.strerror or type(exc).__name__})")
        return ""
    if len(token) < MIN_TOKEN_LENGTH:
        section.error(key, f"{token_file} must hold a token of at least {MIN_TOKEN_LENGTH} characters")
        return ""
    return hashlib.sha256(token.encode()).hexdigest()
