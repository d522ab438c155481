"""Who may use the web page and REST API: users (argon2 passwords) and API tokens (hashed).

Both live in ``<data-dir>/.web-access.json`` (mode 0600), written by ``pepi controller
user|token …`` and re-read by a running controller whenever it changes, so a removed
user or revoked token stops working at once. The name starts with a dot: no capture
id can, so no capture set's folder can ever collide with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pepi_fleet.core.atomic import write_atomic
from pepi_fleet.schemas.errors import PepiError

logger = logging.getLogger(__name__)

ACCESS_FILE = ".web-access.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
TOKEN_PREFIX = "pepi_"


class AccessError(PepiError):
    """A user or token could not be added, removed or read."""


class Role(StrEnum):
    """viewer: look at everything (nodes, sets, images, zips, events); operator: also act."""

    VIEWER = "viewer"
    OPERATOR = "operator"

    def may(self, needed: Role) -> bool:
        """Whether this role covers ``needed``."""
        return needed is Role.VIEWER or self is Role.OPERATOR


@dataclass(frozen=True)
class Principal:
    """Who a request comes from and what they may do."""

    name: str
    role: Role
    via: str
    """``password`` (a session), ``token`` (Authorization: Bearer) or ``open`` (no login)."""


OPEN = Principal("", Role.OPERATOR, "open")
"""Everyone, on a controller that requires no login (--auth off, or auto on loopback)."""


class UserRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    password_hash: str
    created_at: float


class TokenRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: float


class AccessFile(BaseModel):
    """The file's content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: dict[str, UserRecord] = Field(default_factory=dict)
    tokens: dict[str, TokenRecord] = Field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One user or token as ``list`` shows it."""

    name: str
    role: Role
    created_at: float


def token_digest(token: str) -> str:
    """What is stored of a token: its sha256 (a token is 256 random bits, so that is enough)."""
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def check_name(name: str, what: str) -> str:
    """``name`` if it is a valid user or token name, else AccessError."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise AccessError(
            f"invalid {what} name {name[:70]!r}: use 1-64 of A-Z a-z 0-9 . _ @ - "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    """``password`` if it is long enough (and not absurdly long), else AccessError."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccessError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccessError(f"a password may have at most {MAX_PASSWORD_CHARS} characters")
    return password


class AccessStore:
    """The users and tokens of one data dir; thread-safe, re-read when the file changes."""

    def __init__(
        self,
        data_dir: Path,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = data_dir / ACCESS_FILE
        self._hasher = hasher or PasswordHasher()
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._data = AccessFile()
        self._dummy: str | None = None

    # -- reading (the running controller) ------------------------------------------------------

    def current(self) -> AccessFile:
        """The file's content as of now (re-read only when it changed)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            with self._lock:
                self._seen, self._data = None, AccessFile()
                return self._data
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._seen:
                self._data = self._read()
                self._seen = stamp
            return self._data

    def _read(self) -> AccessFile:
        try:
            return AccessFile.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return AccessFile()
        except (OSError, ValidationError) as exc:
            # Refuse everyone rather than guess: the log says what to fix.
            logger.error("cannot read %s, so nobody can log in: %s", self.path, exc)
            return AccessFile()

    def verify_password(self, name: str, password: str) -> Principal | None:
        """The user if ``password`` is theirs, else None (in about the same time either way)."""
        user = self.current().users.get(name)
        if user is None and self._dummy is None:
            # verified against for unknown names, so that a wrong name takes as long
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        stored = user.password_hash if user else self._dummy
        assert stored is not None
        try:
            self._hasher.verify(stored, password[:MAX_PASSWORD_CHARS])
        except (VerificationError, InvalidHashError):
            return None
        return Principal(name, user.role, "password") if user else None

    def verify_token(self, token: str) -> Principal | None:
        """The API token's name and role, or None for an unknown or revoked token."""
        digest = token_digest(token)
        for name, record in self.current().tokens.items():
            if hmac.compare_digest(record.sha256, digest):
                return Principal(name, record.role, "token")
        return None

    def role_of(self, name: str) -> Role | None:
        """A user's role now (None once removed): a session follows the file's changes."""
        user = self.current().users.get(name)
        return user.role if user else None

    def empty(self) -> bool:
        """No user and no token: nobody can log in yet."""
        data = self.current()
        return not data.users and not data.tokens

    def users(self) -> list[Entry]:
        return [Entry(n, u.role, u.created_at) for n, u in sorted(self.current().users.items())]

    def tokens(self) -> list[Entry]:
        return [Entry(n, t.role, t.created_at) for n, t in sorted(self.current().tokens.items())]

    # -- changing (the CLI) --------------------------------------------------------------------

    def add_user(self, name: str, role: Role, password: str, replace: bool = False) -> None:
        """Add a user (or, with ``replace``, set an existing one's password and role)."""
        check_name(name, "user")
        password_hash = self._hasher.hash(check_password(password))
        with self._changing() as data:
            if name in data.users and not replace:
                raise AccessError(
                    f"user {name!r} exists already: add --replace to set a new password and role"
                )
            record = UserRecord(role=role, password_hash=password_hash, created_at=self._clock())
            self._write(data.model_copy(update={"users": {**data.users, name: record}}))

    def remove_user(self, name: str) -> bool:
        """Remove a user (their sessions end with the next request); False if unknown."""
        with self._changing() as data:
            if name not in data.users:
                return False
            users = {n: u for n, u in data.users.items() if n != name}
            self._write(data.model_copy(update={"users": users}))
        return True

    def add_token(self, name: str, role: Role) -> str:
        """A new API token (shown once: only its hash is kept)."""
        check_name(name, "token")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._changing() as data:
            if name in data.tokens:
                raise AccessError(
                    f"token {name!r} exists already: remove it first, or choose another name"
                )
            record = TokenRecord(role=role, sha256=token_digest(token), created_at=self._clock())
            self._write(data.model_copy(update={"tokens": {**data.tokens, name: record}}))
        return token

    def remove_token(self, name: str) -> bool:
        """Revoke a token; False if unknown."""
        with self._changing() as data:
            if name not in data.tokens:
                return False
            tokens = {n: t for n, t in data.tokens.items() if n != name}
            self._write(data.model_copy(update={"tokens": tokens}))
        return True

    @contextlib.contextmanager
    def _changing(self) -> Iterator[AccessFile]:
        """The file's content under an exclusive lock (two CLI runs never lose a change)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(ACCESS_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AccessError(f"cannot write in {self.path.parent}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = AccessFile.model_validate_json(self.path.read_bytes())
            except FileNotFoundError:
                data = AccessFile()
            except (OSError, ValidationError) as exc:
                raise AccessError(f"cannot read {self.path}: {exc}") from exc
            yield data
        finally:
            os.close(fd)

    def _write(self, data: AccessFile) -> None:
        try:
            write_atomic(self.path, data.model_dump_json(indent=2).encode() + b"\n", mode=0o600)
        except OSError as exc:
            raise AccessError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
