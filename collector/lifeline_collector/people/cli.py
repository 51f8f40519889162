"""``lifeline-collector users …`` and ``lifeline-collector audit``: accounts and the audit trail.

These work on the store directly, like ``agents``; a running collector sees a new account or a
disabled one at the next login or request (sessions of a changed account end at once).
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import click

from lifeline_collector.clock import SystemClock
from lifeline_collector.config import CollectorConfig
from lifeline_collector.errors import CollectorError
from lifeline_collector.people.accounts import AccountError, Accounts
from lifeline_collector.people.store import ROLES, PeopleStore
from lifeline_collector.store import Store


def cli_actor() -> str:
    """Who runs the command: the operating-system account (``sudo`` keeps the one who asked)."""
    import os

    return os.environ.get("SUDO_USER") or getpass.getuser()


def cli_address() -> str:
    return f"cli@{socket.gethostname()}"


def cli_audit(store: Store, action: str, target: str, detail: dict[str, object] | None = None) -> None:
    """Record a command-line action in the audit trail (CJIS 5.4: who, what, when, where, outcome)."""
    PeopleStore(store).audit(
        at_ms=round(time.time() * 1000),
        actor=cli_actor(),
        action=action,
        target=target,
        address=cli_address(),
        detail=detail,
    )


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def commands(
    load: Callable[[str], CollectorConfig],
    open_store: Callable[[CollectorConfig], Store],
    config_option: Callable[[Callable[..., None]], Callable[..., None]],
) -> list[click.Command]:
    """The ``users`` group and the ``audit`` command, sharing the main CLI's config handling."""

    def accounts(config_path: str) -> tuple[Store, Accounts]:
        config = load(config_path)
        store = open_store(config)
        return store, Accounts(PeopleStore(store), config.auth, SystemClock())

    @click.group()
    def users() -> None:
        """People who log in to the board: add, list, set passwords and roles, disable."""

    @users.command("add")
    @click.argument("name")
    @click.option(
        "--role",
        type=click.Choice(ROLES),
        default="viewer",
        show_default=True,
        help="viewer: reads; supervisor: also acknowledges, silences, plans maintenance; admin: all.",
    )
    @click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
    @config_option
    def users_add(name: str, role: str, password_stdin: bool, config_path: str) -> None:
        """Add NAME with ROLE (asks for the password; stored as an argon2id hash only)."""
        store, people = accounts(config_path)
        try:
            people.add(name, role, _password(password_stdin), by=cli_actor(), address=cli_address())
        except AccountError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except CollectorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        finally:
            store.close()
        click.echo(f"user {name} added ({role})")

    @users.command("passwd")
    @click.argument("name")
    @click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
    @config_option
    def users_passwd(name: str, password_stdin: bool, config_path: str) -> None:
        """Set NAME's password (their sessions end)."""
        _change(
            accounts, config_path, name, f"password of {name} changed", password=_password(password_stdin)
        )

    @users.command("role")
    @click.argument("name")
    @click.argument("role", type=click.Choice(ROLES))
    @config_option
    def users_role(name: str, role: str, config_path: str) -> None:
        """Give NAME the ROLE (their sessions end)."""
        _change(accounts, config_path, name, f"{name} is now {role}", role=role)

    @users.command("disable")
    @click.argument("name")
    @config_option
    def users_disable(name: str, config_path: str) -> None:
        """Disable NAME: no login, sessions end at once (the account stays for the record)."""
        _change(accounts, config_path, name, f"user {name} disabled", disabled=True)

    @users.command("enable")
    @click.argument("name")
    @config_option
    def users_enable(name: str, config_path: str) -> None:
        """Enable NAME again."""
        _change(accounts, config_path, name, f"user {name} enabled", disabled=False)

    @users.command("list")
    @config_option
    def users_list(config_path: str) -> None:
        """Every account with its role and state."""
        store, people = accounts(config_path)
        try:
            rows = people.people.users()
        finally:
            store.close()
        click.echo(f"{'NAME':24} {'ROLE':11} {'STATE':9} CHANGED (UTC)")
        for user in rows:
            changed = datetime.fromtimestamp(user.changed_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
            state = "active" if user.active else "disabled"
            click.echo(f"{user.name:24} {user.role:11} {state:9} {changed}")

    @click.command("audit")
    @click.option(
        "--since", default="7d", show_default=True, help='How far back: "24h", "30d", or a date 2026-05-01.'
    )
    @click.option("--actor", default="", help="Only what this person (or api-token) did.")
    @click.option(
        "--action", default="", help="Only this action (login, ack, silence, maintenance, user.add…)."
    )
    @click.option("--target", default="", help="Only targets containing this (a position id, a site).")
    @click.option("--outcome", default="", help="success, failure, locked, disabled or denied.")
    @click.option(
        "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
    )
    @click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
    @config_option
    def audit(
        since: str, actor: str, action: str, target: str, outcome: str, fmt: str, limit: int, config_path: str
    ) -> None:
        """The audit trail, newest first: who did what, when, from where, and how it ended."""
        from lifeline_collector.board.web import audit_csv
        from lifeline_wire.tomlcfg import parse_duration

        try:
            start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            try:
                start = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--since") from None
        store = open_store(load(config_path))
        try:
            records = PeopleStore(store).audit_records(
                since_ms=round(start.timestamp() * 1000),
                actor=actor,
                action=action,
                target=target,
                outcome=outcome,
                limit=limit,
            )
        finally:
            store.close()
        bodies = [r.to_json() for r in records]
        if fmt == "json":
            click.echo(json.dumps(bodies, indent=1))
        elif fmt == "csv":
            click.echo(audit_csv(bodies), nl=False)
        else:
            click.echo(f"{'WHEN (UTC)':24} {'WHO':16} {'WHAT':15} {'TARGET':28} {'WHERE':18} OUTCOME")
            for body in bodies:
                click.echo(
                    f"{str(body['at'])[:23]:24} {body['actor']!s:16} {body['action']!s:15}"
                    f" {body['target']!s:28} {body['address']!s:18} {body['outcome']}"
                )

    return [users, audit]


def _change(
    accounts: Callable[[str], tuple[Store, Accounts]],
    config_path: str,
    name: str,
    done: str,
    **change: object,
) -> None:
    store, people = accounts(config_path)
    try:
        people.change(name, by=cli_actor(), address=cli_address(), **change)  # type: ignore[arg-type]
    except AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2 if exc.field != "name" else 1)
    except CollectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    click.echo(done)
