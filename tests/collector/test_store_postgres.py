"""PostgreSQL as the collector's store: its config keys, `lifeline-collector migrate`, the people
tables, and two collectors (in one process here) sharing one database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from collector_kit import T0, cad_round, make_config

from lifeline_collector.app import create_app
from lifeline_collector.cli import main
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import ConfigError, parse
from lifeline_collector.errors import StoreError
from lifeline_collector.people.store import PeopleStore
from lifeline_collector.service import Collector
from lifeline_collector.store import SCHEMA_VERSION, Store
from lifeline_wire import Batch, Envelope

MS = int(T0 * 1000)


def test_store_keys() -> None:
    config = parse(
        {"store": {"backend": "postgresql", "dsn": "postgresql://lifeline@db/lifeline", "pool_size": 8}}
    )
    assert (config.store.location, config.store.pool_size) == ("postgresql://lifeline@db/lifeline", 8)
    assert parse({}).store.location == parse({}).store.path  # SQLite unless told
    for store, why in (
        ({"backend": "postgresql"}, r"store\.dsn: must be a postgresql:// URL"),
        ({"backend": "postgresql", "dsn": "host=db"}, r"store\.dsn: must be a postgresql:// URL"),
        ({"dsn": "postgresql://db/x"}, r'store\.dsn: is used only with backend = "postgresql"'),
        ({"backend": "mysql"}, r"store\.backend"),
        ({"backend": "postgresql", "dsn": "postgresql://db/x", "pool_size": 0}, r"store\.pool_size"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse({"store": store})


def test_migrate_command_brings_the_schema_up_to_date_once(tmp_path: Path, postgres_dsn: str) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'[store]\nbackend = "postgresql"\ndsn = "{postgres_dsn}"\n')
    for _ in range(2):
        result = CliRunner().invoke(main, ["migrate", "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert result.output == f"postgresql store at schema version {SCHEMA_VERSION}\n"


def test_an_unreachable_database_is_a_clear_error_without_the_password(postgres_dsn: str) -> None:
    dsn = postgres_dsn.replace("lifeline@", "lifeline:hunter2@").rsplit(":", 1)[0] + ":1/x"
    with pytest.raises(StoreError, match="cannot open store postgresql://lifeline:<redacted>@") as caught:
        Store(dsn + "?connect_timeout=2", pool_size=1)
    assert "hunter2" not in str(caught.value)


def test_people_tables_audit_stays_append_only(postgres_dsn: str) -> None:
    store = Store(postgres_dsn)
    try:
        people = PeopleStore(store)
        assert people.add_user("anna", "supervisor", "hash", MS)
        assert not people.add_user("anna", "viewer", "hash", MS)  # names are never reused
        people.add_session("sid", "anna", "csrf", "10.0.0.5", MS)
        assert people.session("sid").user == "anna"  # type: ignore[union-attr]
        assert people.secret() == PeopleStore(store).secret()  # every collector signs alike
        now_ms = int(time.time() * 1000)  # the database judges a record's age by its own clock
        people.audit(at_ms=now_ms, actor="anna", action="ack", target="agent=pos-12")
        assert [r.target for r in people.audit_records(target="pos-12")] == ["agent=pos-12"]
        with pytest.raises(StoreError, match="kept at least a year"):
            people.prune_audit(now_ms + 1)
        assert people.audit_records(target="pos-12")
    finally:
        store.close()


@pytest.mark.anyio
async def test_two_collectors_on_one_database_share_agents_batches_and_people(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """A batch that reaches both collectors (a retry through the load balancer) is stored once;
    what one collector registers the other one reads."""
    clock = ManualClock(T0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()  # each collector's own files (the heartbeat secret)
    apps = [
        create_app(
            make_config(tmp_path / name, store={"backend": "postgresql", "dsn": postgres_dsn}),
            clock=clock,
            ticker=False,
        )
        for name in ("a", "b")
    ]
    first: Collector = apps[0].state.collector
    second: Collector = apps[1].state.collector
    first.store.add_agent("pos-12", site="north", position="12", now_ms=MS)
    row = second.store.agent("pos-12")
    assert row is not None
    batch = Batch(agent_id="pos-12", boot_id="b", seq=0, created_ms=MS, samples=cad_round(MS, True, 0))
    envelope = Envelope(version=1, batches=[batch], sent_ms=MS)
    try:
        first.ingest(row, envelope)
        second.ingest(row, envelope)  # the same batch again, through the other collector
        later = Batch(
            agent_id="pos-12", boot_id="b", seq=1, created_ms=MS, samples=cad_round(MS + 5, True, 0)
        )
        second.ingest(row, Envelope(version=1, batches=[later], sent_ms=MS + 5))
        assert first.store.count("batches", "pos-12") == 2
        assert [number for number, *_ in first.store.samples_after(0, 10)] == [1, 2, 3, 4]
    finally:
        for app in apps:
            app.state.collector.store.close()
