"""Two real `lifeline-collector serve` processes over one PostgreSQL, both serving: batches spread
over both are stored once each; a position whose heartbeats reach only the collector that does not
lead is paged by the leader exactly once when they stop, and never while they flow; an
acknowledgement made through one collector is seen by the other."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import httpx
import pytest
from collector_kit import Receiver
from collectors_kit import ADMIN_TOKEN, add_agent, collectors, count_batches, report

from lifeline_wire.heartbeat import HEALTHY, Heartbeat, encode

pytestmark = pytest.mark.system


def _firing(receiver: Receiver, agent: str) -> list[dict[str, object]]:
    """The PositionSilent pages of ``agent`` (pos-8 goes silent too once its batches end)."""
    return [
        alert
        for body in receiver.bodies()
        for alert in body["alerts"]
        if alert["labels"]["alertname"] == "PositionSilent"
        and alert["labels"].get("agent") == agent
        and alert["status"] == "firing"
    ]


def test_collectors_side_by_side_share_batches_beats_and_acknowledgements(
    tmp_path: Path, postgres_dsn: str, receiver: Receiver
) -> None:
    with collectors(tmp_path, postgres_dsn, 2, hook=receiver.url, silent_after="4s") as (leader, follower):
        assert follower.up()  # a collector that does not lead serves all the same
        assert not follower.leads()
        spread = add_agent(leader.config, "pos-8", site="west")  # its own site: no fleet incident
        beating = add_agent(leader.config, "pos-9")
        follower.wait(lambda: report(follower.base, spread, "pos-8", 0).status_code == 200, "no ingest")

        # Batches of one agent over both collectors, each sent to one and retried through the other.
        bases = [leader.base, follower.base]
        for seq in range(1, 20):
            first, second = bases[seq % 2], bases[(seq + 1) % 2]
            answer = report(first, spread, "pos-8", seq)
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"][0]["status"] == "accepted"
            retried = report(second, spread, "pos-8", seq)
            assert retried.json()["results"][0]["status"] == "duplicate", retried.text
        assert count_batches(postgres_dsn, "pos-8") == 20

        # pos-9 reports once, then only beats — to the follower. Past the batch-based silent_after
        # the leader must still hear it (through the shared table), then page once it stops.
        assert report(follower.base, beating, "pos-9", 0).status_code == 200
        offer = httpx.post(
            f"{follower.base}/api/v1/heartbeat", headers={"Authorization": f"Bearer {beating}"}
        ).json()
        key = base64.b64decode(offer["key"])
        beats_until = time.monotonic() + 6.0  # 4 s silent_after, and some
        counter = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            while time.monotonic() < beats_until:
                counter += 1
                beat = Heartbeat("pos-9", "boot-9", counter, int(time.time() * 1000), "tunnel", 0.25, HEALTHY)
                sender.sendto(encode(beat, key), ("127.0.0.1", offer["port"]))
                time.sleep(0.25)
        last_beat = time.monotonic()
        assert _firing(receiver, "pos-9") == [], "paged while the position was beating"
        leader.wait(lambda: bool(_firing(receiver, "pos-9")), "no page after the beats stopped")
        print(f"page {time.monotonic() - last_beat:.2f} s after the last beat (heartbeat_silent_after 2.5 s)")
        time.sleep(2.0)  # more evaluations and silence checks: still one page
        paged = _firing(receiver, "pos-9")
        assert len(paged) == 1

        # The follower shows the alert the leader raised, and acknowledges it; the leader sees that.
        def alert_at(base: str) -> dict[str, object] | None:
            alerts = httpx.get(f"{base}/api/v1/alerts").json()
            return next((a for a in alerts if a["labels"].get("agent") == "pos-9"), None)

        follower.wait(lambda: alert_at(follower.base) is not None, "the follower does not show the alert")
        fingerprint = alert_at(follower.base)["fingerprint"]  # type: ignore[index]
        answer = httpx.post(
            f"{follower.base}/api/v1/alerts/{fingerprint}/ack",
            json={"by": "ana", "comment": "calling her"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert answer.status_code == 200, answer.text

        def acknowledged_at_leader() -> bool:
            alert = alert_at(leader.base)
            return alert is not None and alert["status"]["acknowledged"] is not None  # type: ignore[index]

        leader.wait(acknowledged_at_leader, "the leader did not see the acknowledgement")
        assert alert_at(leader.base)["status"]["acknowledged"]["by"] == "ana"  # type: ignore[index]
