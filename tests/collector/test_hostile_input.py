"""What an agent sends can hurt only its own data: non-finite values, unsafe text, deep JSON,
unstorable sequence numbers and over-limit batches are refused with a 4xx naming the field (and
counted per agent); a rule that raises on one position's data blinds nothing else; rejected
requests leave nothing in memory."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from collector_kit import T0, cad_round, envelope, make_config, serving

from lifeline_collector.alerting.alert import Finding
from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.fleet import AgentView, SeriesState
from lifeline_collector.ingest import fast
from lifeline_collector.ingest.fast import prepare_fast
from lifeline_collector.ingest.group_commit import GroupCommit
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow, BatchRow, labels_key
from lifeline_wire import Batch, Envelope, Event, Sample, SeriesPoints, WireError, decode_envelope, encode

pytestmark = pytest.mark.anyio

MS = int(T0 * 1000)
CAD = {"target": "cad-primary", "role": "cad", "kind": "tcp"}


def series_body(agent: str, seq: int, entries: list[SeriesPoints], **extra: str) -> bytes:
    batch = Batch(agent_id=agent, boot_id="boot-1", seq=seq, created_ms=MS, series=entries)
    return encode(Envelope(version=2, batches=[batch], sent_ms=MS, **extra))


def failures(value: float | str, ts: int = MS) -> list[Sample]:
    return [Sample("lifeline_probe_consecutive_failures", value, ts, CAD)]


# The three decode paths: samples (the general fast path), one batch in the series form (the
# steady path) and a body only the strict decoder takes (an escape in it).
def three_forms(value: str, ts: int = MS) -> dict[str, bytes]:
    samples = envelope("pos-1", (0, [Sample("lifeline_probe_consecutive_failures", 1.0, ts, CAD)]))
    series = series_body("pos-1", 0, [SeriesPoints("lifeline_probe_consecutive_failures", CAD, [(ts, 1.0)])])
    strict = envelope("pos-1", (0, failures(1.0, ts)), position="1\\u0032")
    assert prepare_fast(AGENT_ROW, samples) is not None
    assert prepare_fast(AGENT_ROW, series) is not None
    assert prepare_fast(AGENT_ROW, strict) is None
    return {
        form: sent.replace(b'"value":1.0', f'"value":{value}'.encode()).replace(
            b",1.0]", f",{value}]".encode()
        )
        for form, sent in (("samples", samples), ("series", series), ("strict", strict))
    }


AGENT_ROW = AgentRow("pos-1", "", "", MS, None, None, None)


@pytest.mark.parametrize("spelled", ['"NaN"', '"+Inf"', '"-Inf"'])
async def test_a_non_finite_value_where_a_number_must_be_finite_is_a_422_naming_it(
    tmp_path: Path, clock: ManualClock, spelled: str
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    async with serving(app) as client:
        for form, sent in three_forms(spelled).items():
            assert spelled.encode() in sent
            answer = await client.post(
                "/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 422, (form, answer.text)
            assert answer.json()["field"] in (
                "$.batches[0].samples[0].value",
                "$.batches[0].series[0].points[0][1]",
            ), form
            assert "finite" in answer.json()["error"]
        assert service.store.count("batches") == 0
        metrics = (await client.get("/metrics")).text
    assert 'lifeline_collector_rejected_total{agent="pos-1",reason="non_finite"} 3.0' in metrics


async def test_metrics_that_may_be_infinite_still_are(tmp_path: Path, clock: ManualClock) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    ttl = [
        SeriesPoints(
            "lifeline_cad_time_to_loss_seconds", {}, [(MS, math.inf), (MS + 1, 30.0), (MS + 2, math.inf)]
        )
    ]
    async with serving(app) as client:
        for seq, sent in enumerate(
            (
                series_body("pos-1", 0, ttl),
                envelope("pos-1", (1, [Sample("lifeline_cad_time_to_loss_seconds", math.inf, MS + 5, {})])),
            )
        ):
            assert prepare_fast(AGENT_ROW, sent) is not None  # the fast paths take it
            answer = await client.post(
                "/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.json()["results"][0]["status"] == "accepted", seq
    (state,) = service.fleet.agents["pos-1"].named("lifeline_cad_time_to_loss_seconds")
    assert state.value == math.inf


def test_strict_decode_names_the_non_finite_point() -> None:
    entries = [
        SeriesPoints("lifeline_cad_risk_ratio", {}, [(MS, math.nan)]),  # may be NaN
        SeriesPoints("lifeline_probe_success", CAD, [(MS, 1.0), (MS + 1, math.nan)]),
    ]
    with pytest.raises(WireError) as info:
        decode_envelope(series_body("pos-1", 0, entries))
    assert (info.value.path, info.value.kind) == ("$.batches[0].series[1].points[1][1]", "non_finite")


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("label", "cad\x00primary"),
        ("label", "cad\u202eyramirp"),
        ("attribute", "up\nALERT: all clear"),
        ("site", "north\x1b[2J"),
    ],
)
async def test_control_and_bidi_characters_are_refused_wherever_they_would_be_shown(
    tmp_path: Path, clock: ManualClock, where: str, text: str
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    samples = [
        Sample("lifeline_probe_success", 1.0, MS, {**CAD, "target": text if where == "label" else "cad"})
    ]
    events = [Event("link.state_change", MS, {"reason": text if where == "attribute" else "up"})]
    batch = Batch(agent_id="pos-1", boot_id="b", seq=0, created_ms=MS, samples=samples, events=events)
    sent = encode(Envelope(1, [batch], MS, site=text if where == "site" else ""))
    async with serving(app) as client:
        answer = await client.post(
            "/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 422
    assert (
        answer.json()["field"]
        == {
            "label": "$.batches[0].samples[0].labels.target",
            "attribute": "$.batches[0].events[0].attributes.reason",
            "site": "$.site",
        }[where]
    )
    assert "control or bidirectional-override" in answer.json()["error"]


async def test_deep_json_and_unstorable_sequence_numbers_are_4xx_never_5xx(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}
    good = envelope("pos-1", (0, cad_round(MS, True, 0)))
    deep = b'{"version":2,"extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with serving(app) as client:
        assert (await client.post("/api/v1/ingest", content=deep, headers=auth)).status_code in (400, 422)
        for seq in (2**63, 2**63 - 1, 2**53):
            sent = good.replace(b'"seq":0', f'"seq":{seq}'.encode())
            answer = await client.post("/api/v1/ingest", content=sent, headers=auth)
            assert answer.status_code == 422, seq
            assert answer.json()["field"] == "$.batches[0].seq"
        sent = good.replace(b'"seq":0', f'"seq":{2**53 - 1}'.encode())
        assert (await client.post("/api/v1/ingest", content=sent, headers=auth)).json()["results"][0][
            "status"
        ] == "accepted"
        # Many boots, each far along: the sequence totals must not overflow the store's integers.
        for boot in range(3):
            sent = envelope("pos-1", (2**53 - 1, cad_round(MS, True, 0)), boot=f"boot-{boot}")
            assert (await client.post("/api/v1/ingest", content=sent, headers=auth)).status_code == 200
        assert (await client.post("/api/v1/ingest", content=good, headers=auth)).status_code == 200
        health = await client.get("/healthz")
    assert health.status_code == 200


async def test_series_per_agent_are_limited_and_the_rejection_counted(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = create_app(make_config(tmp_path, limits={"max_series_per_agent": 4}), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}

    def probes(seq: int, targets: range) -> bytes:
        entries = [
            SeriesPoints("lifeline_probe_success", {**CAD, "target": f"t{i}"}, [(MS + seq, 1.0)])
            for i in targets
        ]
        return series_body("pos-1", seq, entries)

    async with serving(app) as client:
        first = await client.post("/api/v1/ingest", content=probes(0, range(3)), headers=auth)
        assert first.json()["results"][0]["status"] == "accepted"
        over = (await client.post("/api/v1/ingest", content=probes(1, range(10)), headers=auth)).json()
        assert over["results"][0]["status"] == "rejected"
        assert "limits.max_series_per_agent (4)" in over["results"][0]["reason"]
        # The same batch in the sample form (the general path) is refused the same way.
        samples = [
            Sample("lifeline_probe_success", 1.0, MS + 2, {**CAD, "target": f"t{i}"}) for i in range(10)
        ]
        other = (
            await client.post("/api/v1/ingest", content=envelope("pos-1", (2, samples)), headers=auth)
        ).json()
        assert other["results"][0]["status"] == "rejected"
        # Its known series keep being updated.
        again = await client.post("/api/v1/ingest", content=probes(3, range(4)), headers=auth)
        assert again.json()["results"][0]["status"] == "accepted"
        metrics = (await client.get("/metrics")).text
    assert sum(map(len, service.fleet.agents["pos-1"].series.values())) == 4
    assert 'lifeline_collector_rejected_total{agent="pos-1",reason="series_limit"} 2.0' in metrics


async def test_event_limits_reject_the_batch_naming_the_key(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path, limits={"max_events_per_batch": 2, "max_event_attribute_length": 8})
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}

    def with_events(seq: int, events: list[Event]) -> bytes:
        batch = Batch("pos-1", "b", seq, MS, samples=cad_round(MS, True, 0), events=events)
        return encode(Envelope(1, [batch], MS))

    async with serving(app) as client:
        many = [Event("link.state_change", MS, {"to": "up"})] * 3
        long = [Event("link.state_change", MS, {"to": "x" * 9})]
        for seq, events, words in (
            (0, many, "limits.max_events_per_batch (2)"),
            (1, long, "limits.max_event_attribute_length (8)"),
        ):
            result = (
                await client.post("/api/v1/ingest", content=with_events(seq, events), headers=auth)
            ).json()
            assert result["results"][0]["status"] == "rejected"
            assert words in result["results"][0]["reason"]
        fine = (await client.post("/api/v1/ingest", content=with_events(2, many[:2]), headers=auth)).json()
        assert fine["results"][0]["status"] == "accepted"
    # The wire contract itself bounds an attribute's length, whatever the config.
    huge = with_events(3, [Event("link.state_change", MS, {"to": "x" * 100_000})])
    with pytest.raises(WireError) as info:
        decode_envelope(huge)
    assert info.value.path.startswith("$.batches[0].events[0].attributes")


async def test_rejected_requests_leave_nothing_in_the_ingest_caches(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_series_infos", {})
    monkeypatch.setattr(fast, "_label_texts", {})
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}
    async with serving(app) as client:
        for seq in range(20):
            unknown = [SeriesPoints(f"lifeline_made_up_{seq}", {"target": "x" * 200}, [(MS, 1.0)])]
            padded = b'{"target":"cad"' + b" " * 100_000 + b"}"
            sent = series_body("pos-1", seq, unknown)
            answer = await client.post("/api/v1/ingest", content=sent, headers=auth)
            assert answer.json()["results"][0]["status"] == "rejected"
            good = series_body(
                "pos-1", 100 + seq, [SeriesPoints("lifeline_probe_success", {"target": "cad"}, [(MS, 1.0)])]
            )
            sent = good.replace(b'{"target":"cad"}', padded)
            assert (await client.post("/api/v1/ingest", content=sent, headers=auth)).status_code == 200
    # Only the one accepted series, and no 100 kB label text, is remembered.
    assert [key[0] for key in fast._series_infos] == []
    assert all(len(text) < 1024 for text in fast._label_texts)


class Flaky:
    """A rule with a bug that shows on one position's data: it fires for every position, and
    raises for ``victim`` once ``broken`` is set."""

    name = "Flaky"

    def __init__(self, victim: str) -> None:
        self.victim = victim
        self.broken = False

    def evaluate(self, agent: AgentView, now: float) -> Iterator[Finding]:
        if self.broken and agent.id == self.victim:
            raise ValueError("cannot convert float NaN to integer")
        labels = {"alertname": self.name, "agent": agent.id, "severity": "warning"}
        yield Finding(agent.id, labels, {"summary": f"{agent.id} at {now:.0f}"}, firing=True)


FLAKY_ERRORS = 'lifeline_collector_rule_errors_total{rule="Flaky"} '


async def test_a_rule_that_raises_on_one_position_blinds_nothing_else(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule is counted and skipped for that position (its alert there kept as it was, neither
    resolved nor re-paged); every other rule and position is judged, and the tick goes on."""
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    flaky = Flaky("pos-1")
    service.engine.rules = (*service.engine.rules, flaky)
    tokens = {agent: service.store.add_agent(agent, now_ms=MS) for agent in ("pos-1", "pos-2")}
    async with serving(app) as client:
        for agent, token in tokens.items():
            sent = envelope(agent, (0, cad_round(MS, True, 0)))
            auth = {"Authorization": f"Bearer {token}"}
            assert (await client.post("/api/v1/ingest", content=sent, headers=auth)).status_code == 200
        before = {a.scope: a for a in service.engine.active() if a.name == "Flaky"}
        assert set(before) == {"pos-1", "pos-2"}
        flaky.broken = True
        clock.advance(service.config.alerting.silent_after + 1)
        service.tick()
        service.tick()
        after = {a.scope: a for a in service.engine.active() if a.name == "Flaky"}
        assert after["pos-1"] == before["pos-1"]  # kept exactly: not resolved, not re-worded
        assert after["pos-2"].annotations["summary"] != before["pos-2"].annotations["summary"]
        for scope in ("pos-1", "pos-2"):  # every other rule still judged both: silence pages
            assert any(
                "silent" in a.annotations.get("summary", "")
                for a in service.engine.states.of_scope(scope)
                if a.name != "Flaky"
            ), scope
        metrics = (await client.get("/metrics")).text
    (flaky_errors,) = [line for line in metrics.splitlines() if line.startswith(FLAKY_ERRORS)]
    assert float(flaky_errors.removeprefix(FLAKY_ERRORS)) >= 2  # each evaluation of pos-1 since it broke
    assert 'lifeline_collector_rule_errors_total{rule="PositionSilent"} 0.0' in metrics
    assert sum("rule Flaky failed for pos-1" in r.getMessage() for r in caplog.records) == 1


async def test_a_non_finite_count_kept_in_an_old_store_breaks_no_rule(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A store written before the contract refused NaN may still hold one: the rules read it as no
    count, and the silent position is still paged, worded from the rest of what it reported."""
    app = create_app(make_config(tmp_path, alerting={"cad_failures": 2}), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    async with serving(app) as client:
        sent = envelope("pos-1", (0, cad_round(MS, True, 0)))
        assert (
            await client.post("/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"})
        ).status_code == 200
        poisoned = service.fleet.agents["pos-1"].series["lifeline_probe_consecutive_failures"]
        (key,) = poisoned
        poisoned[key] = SeriesState(dict(CAD), math.nan, MS + 5000, 0)
        clock.advance(service.config.alerting.silent_after + 1)
        service.tick()
    assert not service.engine.rule_errors
    assert any("silent" in a.annotations.get("summary", "") for a in service.engine.states.of_scope("pos-1"))


async def test_the_tick_loop_survives_any_exception(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, alerting={"evaluate_interval": "0.1s"})
    service = Collector(config)
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        raise RuntimeError("a bug")

    service.tick = tick  # type: ignore[method-assign]
    await service.start(ticker=True)
    try:
        async with asyncio.timeout(30):
            while len(ticks) < 3:
                await asyncio.sleep(0.05)
        assert service._ticker is not None
        assert not service._ticker.done()
    finally:
        await service.stop()
    assert sum("alert evaluation failed" in r.getMessage() for r in caplog.records) == 1  # logged once


async def test_a_failing_evaluation_after_commit_still_answers_every_request(tmp_path: Path) -> None:
    """The data is committed: each request gets its answer even if what runs after the commit
    (alert evaluation) raises — no 500 that would make agents resend what is stored."""
    service = Collector(make_config(tmp_path))

    def after(stored: object) -> None:
        raise RuntimeError("evaluation bug")

    committer = GroupCommit(service.ingestor, after)
    rows = {
        agent: service.store.agent(agent) for agent in ("a", "b") if service.store.add_agent(agent, now_ms=MS)
    }
    requests = [
        prepare_fast(row, envelope(agent, (0, cad_round(MS, True, 0)))) for agent, row in rows.items() if row
    ]
    answers = await asyncio.gather(*(committer.submit(r) for r in requests if r is not None))
    assert [a.results[0].status for a in answers] == ["accepted", "accepted"]
    service.store.close()


async def test_one_unstorable_request_fails_alone_in_its_group_commit(tmp_path: Path) -> None:
    service = Collector(make_config(tmp_path))
    committer = GroupCommit(service.ingestor, lambda stored: None)
    requests = []
    for agent in ("a", "b", "c"):
        service.store.add_agent(agent, now_ms=MS)
        row = service.store.agent(agent)
        assert row is not None
        pending = prepare_fast(row, envelope(agent, (0, cad_round(MS, True, 0))))
        assert pending is not None
        requests.append(pending)
    # A row SQLite cannot take (as a decode path that let an unstorable value through would make).
    index, row = requests[1].batches[0]
    requests[1].batches[0] = (
        index,
        BatchRow(row.boot_id, 2**64, row.created_ms, row.priority, 0, None, None, None),
    )
    outcomes = await asyncio.gather(*(committer.submit(r) for r in requests), return_exceptions=True)
    assert [o.results[0].status for o in (outcomes[0], outcomes[2])] == ["accepted", "accepted"]  # type: ignore[union-attr]
    assert isinstance(outcomes[1], Exception)
    assert not isinstance(outcomes[1], asyncio.CancelledError)
    assert service.store.count("batches") == 2
    service.store.close()


async def test_an_agent_cannot_move_itself_to_another_site(tmp_path: Path, clock: ManualClock) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", site="north", position="12", now_ms=MS)
    blank = service.store.add_agent("pos-2", now_ms=MS)
    async with serving(app) as client:
        for seq in range(2):
            sent = envelope("pos-1", (seq, cad_round(MS + seq, True, 0)), site="south", position="99")
            assert (
                await client.post(
                    "/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"}
                )
            ).status_code == 200
        sent = envelope("pos-2", (0, cad_round(MS, True, 0)), site="east", position="3")
        assert (
            await client.post("/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {blank}"})
        ).status_code == 200
        row = service.store.agent("pos-1")
    view = service.fleet.agents["pos-1"]
    assert (view.site, view.position) == ("north", "12")
    assert row is not None
    assert (row.site, row.position) == ("north", "12")
    # Registered without a site: the agent's own word fills it in.
    assert (service.fleet.agents["pos-2"].site, service.fleet.agents["pos-2"].position) == ("east", "3")


def test_labels_key_cache_keeps_only_plausible_label_sets() -> None:
    huge = {"target": "x" * 256, "role": "y" * 256}
    assert labels_key(huge) == labels_key(dict(huge))
    from lifeline_collector.store import codec as store_module

    assert tuple(huge.items()) not in store_module._labels_keys


async def test_every_status_is_4xx_for_malformed_bodies(tmp_path: Path, clock: ManualClock) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    bodies = [b"", b"[", b"null", b'{"version":2}', b"\xff\xfe", b'{"version":2,"batches":[],"sent_ms":1}']
    async with serving(app) as client:
        for sent in bodies:
            answer: httpx.Response = await client.post(
                "/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"}
            )
            assert 400 <= answer.status_code < 500, sent


async def test_operator_endpoints_answer_4xx_for_unstorable_times_and_deep_json(
    tmp_path: Path, clock: ManualClock
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("an-admin-token-of-some-length")
    config = make_config(tmp_path, api={"admin_token_file": str(token_file)}, auth={"read_access": "open"})
    app = create_app(config, clock=clock, ticker=False)
    auth = {"Authorization": "Bearer an-admin-token-of-some-length"}
    silence = {"matchers": ["agent=pos-1"], "createdBy": "vic"}
    async with serving(app) as client:
        for extra, field in (
            ({"duration": "999999999999d"}, "$.duration"),  # past what the store's integers hold
            ({"endsAt": "9999-12-31T23:59:59-05:00"}, "$.endsAt"),  # past what RFC 3339 can write back
        ):
            answer = await client.post("/api/v1/silences", json={**silence, **extra}, headers=auth)
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == field
        deep = b"[" * 30_000 + b"]" * 30_000
        for path in ("/api/v1/silences", "/api/v1/alerts/0123456789abcdef/ack"):
            assert (await client.post(path, content=deep, headers=auth)).status_code == 400
        assert (await client.get("/api/v1/silences")).status_code == 200


async def test_a_content_length_that_is_not_ascii_digits_is_no_500(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    sent = envelope("pos-1", (0, cad_round(MS, True, 0)))
    async with serving(app) as client:
        headers = {"Authorization": f"Bearer {token}", "Content-Length": "\xb2".encode("latin-1")}
        answer = await client.post("/api/v1/ingest", content=sent, headers=headers)  # type: ignore[arg-type]
    assert answer.status_code < 500


async def test_text_that_looks_like_a_non_finite_value_is_judged_by_the_strict_path(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The fast paths count the spelled non-finite tokens in the body; a label value spelled like
    one makes the counts differ, and the strict decoder accepts what is fine."""
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    entries = [
        SeriesPoints("lifeline_probe_success", {**CAD, "target": "NaN"}, [(MS, 1.0)]),
        SeriesPoints("lifeline_probe_success", {**CAD, "target": "+Inf"}, [(MS, 1.0)]),
        SeriesPoints("lifeline_cad_time_to_loss_seconds", {}, [(MS, math.inf)]),
    ]
    sent = series_body("pos-1", 0, entries)
    assert prepare_fast(AGENT_ROW, sent) is None
    async with serving(app) as client:
        answer = await client.post(
            "/api/v1/ingest", content=sent, headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.json()["results"][0]["status"] == "accepted"
    assert {s.labels["target"] for s in service.fleet.agents["pos-1"].named("lifeline_probe_success")} == {
        "NaN",
        "+Inf",
    }


@pytest.mark.parametrize("form", ["samples", "series"])
async def test_a_sample_from_a_clock_far_ahead_does_not_freeze_the_positions_latest_values(
    tmp_path: Path, clock: ManualClock, form: str
) -> None:
    """A clock that jumped ahead (or a lying agent) sends a 0 stamped days ahead; once its clock is
    right again, its failures must still reach the rules (the far-ahead sample is stored)."""
    app = create_app(make_config(tmp_path, alerting={"cad_failures": 2}), clock=clock, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-1", now_ms=MS)
    auth = {"Authorization": f"Bearer {token}"}
    ahead = MS + 3 * 86_400_000

    def report(seq: int, ts: int, failures: float) -> bytes:
        if form == "samples":
            return envelope("pos-1", (seq, failures_at(ts, failures)))
        return series_body(
            "pos-1", seq, [SeriesPoints("lifeline_probe_consecutive_failures", CAD, [(ts, failures)])]
        )

    async with serving(app) as client:
        for seq, (ts, failures) in enumerate(((ahead, 0.0), (MS + 1000, 1.0), (MS + 2000, 2.0))):
            clock.advance(1)
            answer = await client.post("/api/v1/ingest", content=report(seq, ts, failures), headers=auth)
            assert answer.json()["results"][0]["status"] == "accepted", answer.text
        samples = service.store.count("samples")
    (state,) = service.fleet.agents["pos-1"].named("lifeline_probe_consecutive_failures")
    assert (state.value, state.ts_ms) == (2.0, MS + 2000)
    assert any(a.name == "CadTargetUnreachable" for a in service.engine.active())
    assert samples == 3  # the far-ahead sample is kept all the same


def failures_at(ts: int, value: float) -> list[Sample]:
    return [Sample("lifeline_probe_consecutive_failures", value, ts, CAD)]


def test_event_attribute_integers_stay_within_64_bits() -> None:
    batch = Batch("pos-1", "b", 0, MS, events=[Event("link.state_change", MS, {"bytes": 1})])
    sent = encode(Envelope(1, [batch], MS)).replace(b'"bytes":1', b'"bytes":' + b"9" * 400)
    with pytest.raises(WireError) as info:
        decode_envelope(sent)
    assert info.value.path.startswith("$.batches[0].events[0].attributes")
    assert prepare_fast(AGENT_ROW, sent) is None
