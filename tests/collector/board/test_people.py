"""Accounts, roles, sessions, lockout and the audit trail, on a real store (no HTTP)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from lifeline_collector.clock import ManualClock
from lifeline_collector.errors import StoreError
from lifeline_collector.people.accounts import AccountError, Accounts
from lifeline_collector.people.settings import AuthConfig
from lifeline_collector.people.store import PeopleStore, User, role_rank
from lifeline_collector.store import Store

PASSWORD = "correct horse battery"
HOME, ELSEWHERE = "10.0.0.5", "203.0.113.9"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(str(tmp_path / "collector.db"))
    yield opened  # type: ignore[misc]
    opened.close()


def make(store: Store, clock: ManualClock, **config: object) -> Accounts:
    return Accounts(PeopleStore(store), AuthConfig(**config), clock)  # type: ignore[arg-type]


def test_roles_are_ordered_and_disabled_accounts_hold_none() -> None:
    assert role_rank("viewer") < role_rank("supervisor") < role_rank("admin")
    assert role_rank("root") == 0
    sup = User("ana", "supervisor", "", 0, 0, None)
    assert sup.can("viewer")
    assert sup.can("supervisor")
    assert not sup.can("admin")
    assert not User("ana", "admin", "", 0, 0, disabled_ms=5).can("viewer")


def test_add_checks_every_field_and_keeps_only_an_argon2id_hash(store: Store, clock: ManualClock) -> None:
    accounts = make(store, clock)
    with pytest.raises(AccountError) as short:
        accounts.add("ana", "supervisor", "short", by="root", address="cli")
    assert short.value.field == "password"
    with pytest.raises(AccountError) as role:
        accounts.add("ana", "boss", PASSWORD, by="root", address="cli")
    assert role.value.field == "role"
    with pytest.raises(AccountError) as name:
        accounts.add("-ana", "viewer", PASSWORD, by="root", address="cli")
    assert name.value.field == "name"
    user = accounts.add("ana", "supervisor", PASSWORD, by="root", address="cli")
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    with pytest.raises(AccountError, match="exists"):
        accounts.add("ana", "viewer", PASSWORD, by="root", address="cli")
    actions = [(r.action, r.target, r.outcome) for r in accounts.people.audit_records()]
    assert actions == [("user.add", "ana", "failure"), ("user.add", "ana", "success")]


def test_login_success_failure_and_unknown_names_are_audited_alike(store: Store, clock: ManualClock) -> None:
    accounts = make(store, clock)
    accounts.add("ana", "viewer", PASSWORD, by="root", address="cli")
    assert accounts.login("ana", PASSWORD, HOME).outcome == "success"
    assert accounts.login("ana", "wrong password!", HOME).outcome == "failure"
    assert accounts.login("nobody", "wrong password!", HOME).outcome == "failure"
    logins = [(r.actor, r.address, r.outcome) for r in accounts.people.audit_records(action="login")]
    assert logins == [("nobody", HOME, "failure"), ("ana", HOME, "failure"), ("ana", HOME, "success")]


def test_five_failures_lock_the_account_at_that_address_only_for_ten_minutes(
    store: Store, clock: ManualClock
) -> None:
    accounts = make(store, clock)
    accounts.add("ana", "supervisor", PASSWORD, by="root", address="cli")
    outcomes = [accounts.login("ana", f"guess number {n}", ELSEWHERE).outcome for n in range(5)]
    assert outcomes == ["failure"] * 4 + ["locked"]
    # Locked means locked: the right password from the attacker's address is refused too …
    locked = accounts.login("ana", PASSWORD, ELSEWHERE)
    assert (locked.user, locked.outcome) == (None, "locked")
    assert 0 < locked.retry_after <= 600
    # … but the attacker cannot lock Ana out of her own desk.
    assert accounts.login("ana", PASSWORD, HOME).outcome == "success"
    clock.advance(601)
    assert accounts.login("ana", PASSWORD, ELSEWHERE).outcome == "success"


def test_one_address_trying_many_accounts_is_stopped(store: Store, clock: ManualClock) -> None:
    accounts = make(store, clock, address_lockout_after=6)
    accounts.add("ana", "viewer", PASSWORD, by="root", address="cli")
    for n in range(6):
        accounts.login(f"user{n}", "spraying a password", ELSEWHERE)
    assert accounts.login("ana", PASSWORD, ELSEWHERE).outcome == "locked"
    assert accounts.login("ana", PASSWORD, HOME).outcome == "success"


def test_sessions_end_on_logout_idle_lifetime_password_change_and_disable(
    store: Store, clock: ManualClock
) -> None:
    accounts = make(store, clock, session_idle=600.0, session_lifetime=3600.0)
    ana = accounts.add("ana", "supervisor", PASSWORD, by="root", address="cli")
    cookie, csrf = accounts.start_session(ana, HOME)
    resolved = accounts.resolve(cookie)
    assert resolved is not None
    assert resolved[0].name == "ana"
    assert resolved[1] == csrf
    assert accounts.resolve(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None  # tampered
    assert accounts.resolve("not-a-cookie") is None
    accounts.end_session(cookie)
    assert accounts.resolve(cookie) is None

    idle, _ = accounts.start_session(ana, HOME)
    clock.advance(601)
    assert accounts.resolve(idle) is None

    busy, _ = accounts.start_session(ana, HOME)
    for _ in range(6):  # in use every 10 minutes: alive until the lifetime ends
        clock.advance(590)
        assert accounts.resolve(busy) is not None
    clock.advance(300)
    assert accounts.resolve(busy) is None

    for change in ({"password": "another long password"}, {"disabled": True}):
        live, _ = accounts.start_session(ana, HOME)
        accounts.change("ana", by="root", address="cli", **change)  # type: ignore[arg-type]
        assert accounts.resolve(live) is None
    assert accounts.login("ana", "another long password", HOME).outcome == "disabled"
    actions = [r.action for r in accounts.people.audit_records() if r.action.startswith("user.")]
    assert actions == ["user.disable", "user.passwd", "user.add"]


def test_the_audit_trail_is_append_only_and_kept_a_year(store: Store, clock: ManualClock) -> None:
    people = PeopleStore(store)
    now_ms = round(time.time() * 1000)
    people.audit(at_ms=now_ms, actor="ana", action="ack", target="agent=pos-12", address=HOME)
    people.audit(at_ms=now_ms - 400 * 86_400_000, actor="bo", action="login", target="bo", address=HOME)
    (recent,) = people.audit_records(actor="ana")
    assert (recent.action, recent.target, recent.address, recent.outcome) == (
        "ack",
        "agent=pos-12",
        HOME,
        "success",
    )
    # Targets match by a part, in any case, with no wildcards of their own.
    assert [r.actor for r in people.audit_records(target="POS-12")] == ["ana"]
    assert people.audit_records(target="pos_12") == []
    assert people.audit_records(target="%") == []
    # Even asked to drop everything, the store keeps what is younger than a year.
    with pytest.raises(StoreError, match="at least a year"):
        people.prune_audit(now_ms + 1)
    assert people.prune_audit(now_ms - 366 * 86_400_000) == 1
    assert [r.actor for r in people.audit_records()] == ["ana"]
    # A second connection (someone with sqlite3 at the file) meets the same triggers.
    raw = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE audit SET outcome = 'failure'")
    raw.close()
