"""Accounts and logins: argon2id passwords, roles, per-account lockout, sessions, CSRF tokens.

Lockout counts failures per (account, client address): five wrong passwords for ``alice`` from one
address lock ``alice`` *at that address* for ten minutes (CJIS 5.5.3), so someone guessing from
elsewhere cannot lock Alice out of her own desk. A separate, higher count per address alone stops
one address from trying many accounts (password spraying). An unknown name fails exactly like a
wrong password, after the same argon2 work, so names cannot be probed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

from lifeline_collector.clock import Clock
from lifeline_collector.people.settings import AuthConfig
from lifeline_collector.people.store import ROLES, PeopleStore, User

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
SESSION_TOUCH_EVERY = 60.0  # write the session's last use at most this often
MAX_TRACKED = 100_000  # failure records kept before the expired ones are swept


class AccountError(ValueError):
    """A refused account change; ``field`` names what was wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise AccountError(
            "name", "1–64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError("role", f"must be one of {', '.join(ROLES)} (got {role!r})")
    return role


def check_password(password: str, name: str = "") -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError("password", f"must be at most {MAX_PASSWORD} characters")
    if name and password.lower() == name.lower():
        raise AccountError("password", "must not be the user name")
    return password


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: User | None
    outcome: str  # success | failure | locked | disabled
    retry_after: float = 0.0


class Lockout:
    """Failures in memory, per (account, address) and per address, each within ``lockout_for``."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._pairs: dict[tuple[str, str], list[float]] = {}
        self._addresses: dict[str, list[float]] = {}

    def _recent(self, times: list[float] | None, now: float) -> list[float]:
        return [t for t in times or () if now - t < self.config.lockout_for]

    def locked_for(self, name: str, address: str, now: float) -> float:
        """Seconds until this account may try again from this address (0: it may now)."""
        waits = [0.0]
        for times, limit in (
            (self._recent(self._pairs.get((name.lower(), address)), now), self.config.lockout_after),
            (self._recent(self._addresses.get(address), now), self.config.address_lockout_after),
        ):
            if len(times) >= limit:
                waits.append(times[-limit] + self.config.lockout_for - now)
        return max(waits)

    def fail(self, name: str, address: str, now: float) -> None:
        if len(self._pairs) + len(self._addresses) > MAX_TRACKED:
            self._forget_expired(now)
        key = (name.lower(), address)
        self._pairs[key] = [*self._recent(self._pairs.get(key), now), now]
        self._addresses[address] = [*self._recent(self._addresses.get(address), now), now]

    def _forget_expired(self, now: float) -> None:
        """Names and addresses are the caller's to invent: keep only failures still counting."""
        self._pairs = {k: t for k, t in self._pairs.items() if self._recent(t, now)}
        self._addresses = {k: t for k, t in self._addresses.items() if self._recent(t, now)}

    def succeed(self, name: str, address: str) -> None:
        self._pairs.pop((name.lower(), address), None)


class Accounts:
    """What the login page, the CLI and the admin use: users, passwords, sessions."""

    def __init__(self, people: PeopleStore, config: AuthConfig, clock: Clock) -> None:
        self.people = people
        self.config = config
        self.clock = clock
        self.hasher = PasswordHasher()  # argon2id, RFC 9106's second recommended parameters
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self.lockout = Lockout(config)
        self.signer = TimestampSigner(people.secret(), salt="lifeline-session")
        self._touched: dict[str, float] = {}

    def _now_ms(self) -> int:
        return round(self.clock.now() * 1000)

    # --- accounts (CLI and admin) -----------------------------------------------------------------

    def add(self, name: str, role: str, password: str, *, by: str, address: str) -> User:
        check_name(name)
        check_role(role)
        check_password(password, name)
        if not self.people.add_user(name, role, self.hasher.hash(password), self._now_ms()):
            self.people.audit(
                at_ms=self._now_ms(),
                actor=by,
                action="user.add",
                target=name,
                address=address,
                outcome="failure",
                detail={"reason": "name taken"},
            )
            raise AccountError("name", f"user {name!r} exists (names are never reused)")
        self.people.audit(
            at_ms=self._now_ms(),
            actor=by,
            action="user.add",
            target=name,
            address=address,
            detail={"role": role},
        )
        user = self.people.user(name)
        assert user is not None
        return user

    def change(
        self,
        name: str,
        *,
        by: str,
        address: str,
        password: str | None = None,
        role: str | None = None,
        disabled: bool | None = None,
    ) -> None:
        """Set a password, a role or the disabled flag; the account's sessions end."""
        if password is not None:
            check_password(password, name)
        if role is not None:
            check_role(role)
        digest = None if password is None else self.hasher.hash(password)
        found = self.people.update_user(
            name, self._now_ms(), password_hash=digest, role=role, disabled=disabled
        )
        action = (
            "user.passwd" if password is not None else "user.role" if role is not None else "user.disable"
        )
        if disabled is False:
            action = "user.enable"
        detail: dict[str, object] = {} if role is None else {"role": role}
        self.people.audit(
            at_ms=self._now_ms(),
            actor=by,
            action=action,
            target=name,
            address=address,
            outcome="success" if found else "failure",
            detail=detail if found else {"reason": "no such user"},
        )
        if not found:
            raise AccountError("name", f"no user {name!r}")

    # --- logins ---------------------------------------------------------------------------------

    def login(self, name: str, password: str, address: str) -> LoginResult:
        now = self.clock.now()
        wait = self.lockout.locked_for(name, address, now)
        if wait > 0:
            result = LoginResult(None, "locked", wait)
        else:
            user = self.people.user(name) if NAME_RE.match(name) else None
            ok = self._verify(user.password_hash if user else self._dummy, password) and user is not None
            if user is not None and ok and not user.active:
                result = LoginResult(None, "disabled")
            elif user is not None and ok:
                self.lockout.succeed(name, address)
                if self.hasher.check_needs_rehash(user.password_hash):
                    self.people.update_user(name, self._now_ms(), password_hash=self.hasher.hash(password))
                result = LoginResult(user, "success")
            else:
                self.lockout.fail(name, address, now)
                wait = self.lockout.locked_for(name, address, now)
                result = LoginResult(None, "locked" if wait > 0 else "failure", wait)
        self.people.audit(
            at_ms=self._now_ms(),
            actor=name[:64],
            action="login",
            target=name[:64],
            address=address,
            outcome=result.outcome,
        )
        return result

    def _verify(self, digest: str, password: str) -> bool:
        try:
            return self.hasher.verify(digest, password[:MAX_PASSWORD])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # --- sessions -------------------------------------------------------------------------------

    def start_session(self, user: User, address: str) -> tuple[str, str]:
        """A new session: (cookie value, CSRF token)."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self.people.add_session(session_id, user.name, csrf, address, self._now_ms())
        return self.signer.sign(session_id).decode(), csrf

    def session_id(self, cookie: str) -> str | None:
        try:
            return self.signer.unsign(cookie, max_age=round(self.config.session_lifetime)).decode()
        except (BadSignature, SignatureExpired):
            return None

    def resolve(self, cookie: str) -> tuple[User, str] | None:
        """The user and CSRF token of a live session cookie, or None (expired, idle, ended, disabled)."""
        session_id = self.session_id(cookie)
        if session_id is None:
            return None
        row = self.people.session(session_id)
        if row is None:
            return None
        now = self.clock.now()
        if now - row.created_ms / 1000 > self.config.session_lifetime or now - row.seen_ms / 1000 > (
            self.config.session_idle
        ):
            self.people.drop_session(session_id)
            return None
        user = self.people.user(row.user)
        if user is None or not user.active:
            return None
        if now - max(row.seen_ms / 1000, self._touched.get(session_id, 0.0)) >= SESSION_TOUCH_EVERY:
            self._touched[session_id] = now
            self.people.touch_session(session_id, round(now * 1000))
        return user, row.csrf

    def end_session(self, cookie: str) -> None:
        session_id = self.session_id(cookie)
        if session_id is not None:
            self.people.drop_session(session_id)
            self._touched.pop(session_id, None)
