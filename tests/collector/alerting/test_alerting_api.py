"""Operator API (admin token, lockout, silences, acks, alert status) and the CLI on the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alerting_kit import Position
from click.testing import CliRunner
from collector_kit import serving

from lifeline_collector.app import create_app
from lifeline_collector.cli import main
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import parse
from lifeline_collector.errors import StoreError
from lifeline_collector.service import Collector

ADMIN = "admin-token-0123456789abcdef"


def app_config(tmp_path: Path, **api: Any) -> Any:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN + "\n")
    return parse(
        {
            "store": {"path": str(tmp_path / "collector.db")},
            "api": {"admin_token_file": str(token_file), **api},
        }
    )


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_silence_and_ack_through_the_api(tmp_path: Path, clock: ManualClock) -> None:
    config = app_config(tmp_path)
    assert ADMIN not in repr(config)  # only the hash is kept, and not shown
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    async with serving(app) as client:
        body = {
            "matchers": [
                {"name": "site", "value": "north", "isRegex": False, "isEqual": True},
                "layer=~vpn|cad",
            ],
            "duration": "1h",
            "createdBy": "sup-ana",
            "comment": "VPN maintenance",
        }
        assert (await client.post("/api/v1/silences", json=body)).status_code == 401
        assert (await client.post("/api/v1/silences", json=body, headers=auth("wrong"))).status_code == 401
        created = await client.post("/api/v1/silences", json=body, headers=auth())
        assert created.status_code == 201
        silence = created.json()
        assert silence["matcherText"] == "site=north,layer=~vpn|cad"
        assert (silence["createdBy"], silence["status"]["state"]) == ("sup-ana", "active")
        assert silence["endsAt"] == "2023-11-14T23:13:20.000Z"

        listed = (await client.get("/api/v1/silences", headers=auth())).json()
        assert [s["id"] for s in listed] == [silence["id"]]

        Position(service, clock, "pos-12", "north", "12").vpn_down()
        Position(service, clock, "pos-2", "south", "2").vpn_down()
        alerts = {
            a["labels"]["agent"]: a for a in (await client.get("/api/v1/alerts", headers=auth())).json()
        }
        assert alerts["pos-12"]["status"]["silencedBy"] == [silence["id"]]
        assert alerts["pos-12"]["status"]["state"] == "suppressed"
        assert alerts["pos-2"]["status"]["state"] == "active"
        assert [
            a["labels"]["agent"]
            for a in (await client.get("/api/v1/alerts?site=south", headers=auth())).json()
        ] == ["pos-2"]

        fp = alerts["pos-2"]["fingerprint"]
        ack_url = f"/api/v1/alerts/{fp}/ack"
        assert (await client.post(ack_url, json={"by": "sup-bo"})).status_code == 401
        missing = await client.post(ack_url, json={}, headers=auth())
        assert (missing.status_code, missing.json()["field"]) == (422, "$.by")
        acked = await client.post(ack_url, json={"by": "sup-bo", "comment": "on the phone"}, headers=auth())
        assert acked.status_code == 200
        assert acked.json()["status"]["acknowledged"]["by"] == "sup-bo"
        assert (
            await client.post("/api/v1/alerts/ffffffffffffffff/ack", json={"by": "x"}, headers=auth())
        ).status_code == 404
        detail = (await client.get("/positions/pos-2", headers=auth())).json()
        assert detail["alerts"][0]["status"]["acknowledged"]["comment"] == "on the phone"

        url = f"/api/v1/silences/{silence['id']}"
        assert (await client.delete(url)).status_code == 401
        assert (await client.delete(url, headers=auth())).status_code == 200
        assert (await client.delete(url, headers=auth())).status_code == 404
        assert (await client.get("/api/v1/silences", headers=auth())).json() == []
        assert [
            s["status"]["state"]
            for s in (await client.get("/api/v1/silences?all=true", headers=auth())).json()
        ] == ["expired"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"matchers": [], "duration": "1h", "createdBy": "a"}, 422, "$.matchers"),
        ({"matchers": ["site"], "duration": "1h", "createdBy": "a"}, 422, "$.matchers[0]"),
        ({"matchers": ["site=x"], "duration": "soon", "createdBy": "a"}, 422, "$.duration"),
        ({"matchers": ["site=x"], "duration": "1h"}, 422, "$.createdBy"),
        ({"matchers": ["site=x"], "endsAt": "2020-01-01T00:00:00Z", "createdBy": "a"}, 422, "$.endsAt"),
        ({"matchers": ["site=x"], "endsAt": "tomorrow", "createdBy": "a"}, 422, "$.endsAt"),
        ({"matchers": ["site=x"], "duration": "1h", "createdBy": "a", "extra": 1}, 422, "$.extra"),
        (
            {"matchers": [{"name": "site", "value": 3}], "duration": "1h", "createdBy": "a"},
            422,
            "$.matchers[0]",
        ),
    ],
)
async def test_bad_silences_name_the_field(
    tmp_path: Path, clock: ManualClock, body: dict[str, Any], status: int, field: str
) -> None:
    app = create_app(app_config(tmp_path), clock=clock, ticker=False)
    async with serving(app) as client:
        answer = await client.post("/api/v1/silences", json=body, headers=auth())
        assert (answer.status_code, answer.json().get("field")) == (status, field)
        assert (await client.get("/api/v1/silences", headers=auth())).json() == []
        broken = await client.post("/api/v1/silences", content=b"{not json", headers=auth())
        assert broken.status_code == 400


@pytest.mark.anyio
async def test_lockout_after_failed_admin_attempts(tmp_path: Path, clock: ManualClock) -> None:
    app = create_app(app_config(tmp_path, lockout_after=3, lockout_for="10m"), clock=clock, ticker=False)
    async with serving(app) as client:
        for _ in range(3):
            assert (await client.delete("/api/v1/silences/x", headers=auth("guess"))).status_code == 401
        locked = await client.delete("/api/v1/silences/x", headers=auth())  # even the right token
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) == 600
        clock.advance(601)
        assert (await client.delete("/api/v1/silences/x", headers=auth())).status_code == 404


@pytest.mark.anyio
async def test_without_an_admin_token_writes_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    app = create_app(parse({"store": {"path": str(tmp_path / "c.db")}}), clock=clock, ticker=False)
    async with serving(app) as client:
        answer = await client.post("/api/v1/silences", json={}, headers=auth())
        assert answer.status_code == 401
        assert isinstance(answer, httpx.Response)


def test_admin_token_file_errors(tmp_path: Path) -> None:
    from lifeline_wire.tomlcfg import ConfigError

    short = tmp_path / "short.token"
    short.write_text("abc")
    for path, message in ((tmp_path / "none.token", "cannot read"), (short, "at least 16 characters")):
        with pytest.raises(ConfigError) as caught:
            parse({"api": {"admin_token_file": str(path)}})
        ((key, reason),) = caught.value.problems
        assert key == "api.admin_token_file"
        assert message in reason


# --- the CLI works on the store directly -------------------------------------------------------


def test_cli_silences_and_alerts(tmp_path: Path, clock: ManualClock) -> None:
    config_file = tmp_path / "collector.toml"
    config_file.write_text(f'[store]\npath = "{tmp_path / "collector.db"}"\n')
    clock.set(time.time())  # the CLI stamps silences and acks with the real clock
    service = Collector(parse({"store": {"path": str(tmp_path / "collector.db")}}), clock=clock)
    Position(service, clock, "pos-12", "north", "12").vpn_down()
    (alert,) = service.engine.active()
    runner = CliRunner()
    conf = ["--config", str(config_file)]

    added = runner.invoke(
        main,
        ["silences", "add", "--matcher", "site=north", "-m", "alertname=~Position.*", "--duration", "2h",
         "--by", "sup-ana", "--comment", "router swap", *conf],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    silence_id = added.stdout.strip().splitlines()[-1]
    listed = runner.invoke(main, ["silences", "list", *conf])
    assert silence_id in listed.output
    assert "site=north,alertname=~Position.*" in listed.output
    assert "sup-ana" in listed.output
    assert "router swap" in listed.output

    alerts = runner.invoke(main, ["alerts", "list", *conf])
    assert alerts.exit_code == 0
    assert alert.fingerprint in alerts.output
    assert "silenced" in alerts.output
    assert "Position 12 (north) lost CAD — VPN tunnel down, internet fine; hotspot ready." in alerts.output

    acked = runner.invoke(main, ["alerts", "ack", alert.fingerprint, "--by", "sup-bo", *conf])
    assert acked.exit_code == 0, acked.output
    assert "acknowledged by sup-bo" in acked.output
    # The running collector picks the acknowledgement (and the silence) up at its next tick.
    clock.set(time.time())
    service.tick()
    status = service.engine.status(alert)
    assert status.acknowledged is not None
    assert status.acknowledged.by == "sup-bo"
    assert status.silenced_by == (silence_id,)

    expired = runner.invoke(main, ["silences", "expire", silence_id, *conf])
    assert expired.exit_code == 0
    clock.set(time.time())
    service.tick()
    assert service.engine.status(alert).silenced_by == ()
    again = runner.invoke(main, ["silences", "expire", silence_id, *conf])
    assert again.exit_code == 1
    assert "no silence" in again.output

    bad = runner.invoke(main, ["silences", "add", "--matcher", "site", "--by", "x", *conf])
    assert bad.exit_code == 2
    assert "must look like name=value" in bad.output
    unknown = runner.invoke(main, ["alerts", "ack", "0000000000000000", "--by", "x", *conf])
    assert unknown.exit_code == 1
    assert "no active alert" in unknown.output
    service.store.close()


@pytest.mark.anyio
async def test_a_store_failing_under_an_operator_answers_503_and_keeps_its_reason_in_the_log(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(app_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise StoreError("query failed: connection to db1.agency.internal refused")

    monkeypatch.setattr(service, "add_silence", unreachable)
    monkeypatch.setattr(service, "acknowledge", unreachable)
    body = {"matchers": ["site=north"], "duration": "1h", "createdBy": "sup-ana"}
    async with serving(app) as client:
        for answer in (
            await client.post("/api/v1/silences", json=body, headers=auth()),
            await client.post("/api/v1/alerts/ffffffffffffffff/ack", json={"by": "sup-ana"}, headers=auth()),
        ):
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "1"
            assert "db1.agency.internal" not in answer.text
    assert "db1.agency.internal" in caplog.text
