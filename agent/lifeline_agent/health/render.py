"""Words for the dispatcher: the local warning and the ``lifeline-agent status`` screen.

Plain language on purpose — the reader is a telecommunicator in the middle of a shift, not IT.
"""

from __future__ import annotations

import math

from lifeline_agent.health.assessment import Assessment
from lifeline_wire.layers import CHAIN, TITLES, ms, pct

MARKERS = {"ok": "✔", "degraded": "!", "failed": "✖", "unknown": "?"}
HEADLINES = {"ok": "OK", "degraded": "DEGRADED", "failed": "FAILING"}


def time_words(seconds: float) -> str:
    """A time left, rounded as a person says it: "a few seconds", "about 25 s", "about 2 min".

    Never "now": a time left is only asked for while there is some (callers say "now" themselves).
    """
    if not math.isfinite(seconds):
        return "no loss expected"
    if seconds < 10:
        return "a few seconds"
    if seconds < 55:
        return f"about {5 * round(seconds / 5):.0f} s"
    if seconds < 90:
        return "about a minute"
    return f"about {round(seconds / 60):.0f} min"


def _why_not_ready(a: Assessment) -> str:
    """Why the hotspot cannot take over, as a clause ("" when the reason is not known)."""
    prefix = "hotspot not ready: "
    return f" ({a.backup_reason.removeprefix(prefix)})" if a.backup_reason.startswith(prefix) else ""


def local_warning(a: Assessment) -> str | None:
    """The sentence to put in front of the dispatcher, or None when there is nothing to do."""
    if a.verdict_layer == "power" and a.verdict_state == "failed":
        left = f" in {time_words(a.time_to_loss)}" if math.isfinite(a.time_to_loss) else " soon"
        return (
            f"Your laptop battery will run out{left} — home power is out. "
            "Plug in if you can, or call the floor."
        )
    failing = a.verdict_layer in CHAIN and a.verdict_state == "failed"
    # The band is held for a while after the risk has gone (so it does not flap); with nothing at
    # risk any more there is nothing to tell the dispatcher ("at risk — stable").
    at_risk = a.risk_band in ("warn", "page") and a.risk_reason != "stable"
    if not failing and not at_risk:
        return None
    if failing:
        lead, what = "Your CAD connection is failing", a.verdict
    elif math.isfinite(a.time_to_loss) and a.time_to_loss < 1:
        lead, what = "Your CAD connection is failing now", a.risk_reason
    elif math.isfinite(a.time_to_loss):
        lead, what = f"Your CAD connection may fail within {time_words(a.time_to_loss)}", a.risk_reason
    else:
        lead, what = "Your CAD connection is at risk", a.risk_reason
    if a.on_backup:
        action = "You are already on the hotspot — call the floor."
    elif a.backup_ready is True:
        action = "Switch to the hotspot or call the floor."
    elif a.backup_ready is False:
        action = f"The hotspot is not ready either{_why_not_ready(a)} — call the floor now."
    else:
        action = "Switch to your hotspot if you have one, or call the floor."
    return f"{lead} — {what}. {action}"


def backup_words(a: Assessment) -> str:
    if a.backup_ready is None:
        return "not checked (no backup path configured)"
    if not a.backup_ready:
        return f"NOT ready — {a.backup_reason}"
    details = []
    if a.backup_rtt is not None:
        details.append(f"RTT {ms(a.backup_rtt)}")
    if a.backup_loss is not None:
        details.append(f"loss {pct(a.backup_loss)}")
    extra = f" ({', '.join(details)})" if details else ""
    state = a.layer("backup").state
    return f"ready{extra}" + (f" — {a.backup_reason}" if state == "degraded" else "")


def render_status(a: Assessment) -> str:
    """The one screen ``lifeline-agent status`` prints."""
    title = f"Lifeline — position {a.position}" if a.position else "Lifeline"
    if a.verdict_state == "ok" and a.risk_band in ("warn", "page"):
        headline = "AT RISK"
    else:
        headline = HEADLINES.get(a.verdict_state, "UNKNOWN")
    lines = [title, "", f"CAD connection: {headline} — {a.verdict}"]
    risk = f"Risk of losing CAD soon: {a.risk * 100:.0f} %"
    if math.isfinite(a.time_to_loss) and a.time_to_loss < 1:
        risk += f", being lost now ({a.risk_reason})"
    elif math.isfinite(a.time_to_loss):
        risk += f", expected within {time_words(a.time_to_loss)} ({a.risk_reason})"
    elif a.risk > 0:
        risk += f" ({a.risk_reason})"
    lines += [risk, ""]
    width = max(len(t) for t in TITLES.values())
    for status in a.layers:
        marker = MARKERS.get(status.state, "?")
        lines.append(f"  {marker} {TITLES[status.layer]:<{width}}  {status.reason}")
    lines += ["", f"Backup (hotspot): {backup_words(a)}"]
    if a.on_backup:
        lines.append("You are running on the backup path now.")
    if a.warning:
        lines += ["", f"⚠ {a.warning}"]
    return "\n".join(lines) + "\n"
