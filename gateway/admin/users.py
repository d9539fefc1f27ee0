"""Console users: roles, argon2id passwords, TOTP secrets and recovery codes.

Storage: SQLite (gateway/_sqlite.py) at data_dir/admin/users.db.

Trust boundary: names and passwords come from the login form (untrusted). Nothing here
logs or returns a password, a TOTP secret or a recovery code except the moments they
are created and must be shown once (enrolment, recovery codes).

Invariants:
- Passwords are stored as argon2id hashes (argon2-cffi defaults: RFC 9106 second
  recommended option, 64 MiB, t=3).
- TOTP secrets are sealed at rest with the data key (crypto/aead.py), bound to the
  user name as associated data so a secret cannot be moved to another user's row.
- A TOTP time step is accepted at most once per user (no replay within the window).
- Recovery codes are 60-bit random values, stored as SHA-256 (high-entropy codes do
  not need a slow hash) and deleted when used.
- Auditors and admins must have TOTP; a viewer may enrol but does not have to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import argon2
import pyotp

from crypto.aead import Sealer
from crypto.keys import load_keys
from gateway._sqlite import open_database
from gateway.errors import PortiqueError

MIGRATIONS = (
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        totp_secret BLOB,
        totp_enrolled INTEGER NOT NULL DEFAULT 0,
        totp_last_step INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE recovery_codes (
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        PRIMARY KEY (user, code_hash)
    )
    """,
)

# User names: what fits in an audit record and a URL without escaping surprises.
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# 12 characters: NIST SP 800-63B asks for at least 8; staff passwords guard patient data.
MIN_PASSWORD_LENGTH = 12
# 1024 characters: argon2 hashes anything, but a bound keeps a hostile form cheap.
MAX_PASSWORD_LENGTH = 1024
# Ten one-time codes, as most services issue; each 12 base32 characters = 60 bits.
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_LENGTH = 12
# Accept the previous and next 30-second step: clocks on phones drift (RFC 6238 §5.2).
TOTP_VALID_WINDOW = 1
TOTP_ISSUER = "Portique"


class Role(StrEnum):
    VIEWER = "viewer"
    AUDITOR = "auditor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {Role.VIEWER: 0, Role.AUDITOR: 1, Role.ADMIN: 2}[self]

    @property
    def requires_totp(self) -> bool:
        return self is not Role.VIEWER

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class UserError(PortiqueError):
    """Invalid user name, role or password; the message never carries the password."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    totp_enrolled: bool
    password_hash: str = field(repr=False)


class UserStore:
    """Thread-safe: the CLI uses it directly, the console from worker threads."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        sealer: Sealer,
        hasher: argon2.PasswordHasher | None = None,
    ) -> None:
        self._conn = conn
        self._sealer = sealer
        self._lock = threading.Lock()
        # argon2id with argon2-cffi's defaults; tests pass cheaper parameters. Hashes
        # carry their parameters, so verification works whatever created them.
        self._hasher = hasher or argon2.PasswordHasher()
        if self._hasher.type is not argon2.Type.ID:
            raise UserError("console passwords must be hashed with argon2id")
        # Verified against when the user does not exist, so timing does not reveal names.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def open(cls, data_dir: Path, hasher: argon2.PasswordHasher | None = None) -> UserStore:
        conn = open_database(data_dir / "admin" / "users.db", MIGRATIONS, check_same_thread=False)
        return cls(conn, Sealer(load_keys(data_dir)), hasher)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- users -----------------------------------------------------------------

    def add_user(self, name: str, role: Role | str, password: str) -> User:
        role = _parse_role(role)
        _check_name(name)
        _check_password(password)
        pw_hash = self._hasher.hash(password)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                    (name, role.value, pw_hash, time.time()),
                )
            except sqlite3.IntegrityError as exc:
                raise UserError(f"user {name!r} already exists") from exc
        return User(name, role, False, pw_hash)

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, totp_enrolled, password_hash FROM users WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return User(row[0], Role(row[1]), bool(row[2]), row[3])

    def list_users(self) -> list[User]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, role, totp_enrolled, password_hash FROM users ORDER BY name"
            ).fetchall()
        return [User(r[0], Role(r[1]), bool(r[2]), r[3]) for r in rows]

    def verify_password(self, name: str, password: str) -> User | None:
        """The user if the password matches, else None. Takes the same time for an
        unknown user. Blocking (argon2): call from a worker thread in async code."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return None
        user = self.get(name) if USER_NAME.match(name) else None
        try:
            self._hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except argon2.exceptions.VerificationError:
            return None
        except argon2.exceptions.InvalidHashError:
            return None
        return user

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        pw_hash = self._hasher.hash(password)
        with self._lock:
            cur = self._conn.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (pw_hash, name)
            )
        if cur.rowcount == 0:
            raise UserError(f"no user {name!r}")

    # --- TOTP ------------------------------------------------------------------

    def pending_totp_secret(self, name: str) -> str:
        """The secret to enrol (created on first call, kept until enrolment succeeds)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT totp_secret, totp_enrolled FROM users WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise UserError(f"no user {name!r}")
            if row[1]:
                raise UserError(f"user {name!r} is already enrolled")
            if row[0] is not None:
                return self._open_secret(name, row[0])
            secret = pyotp.random_base32()
            self._conn.execute(
                "UPDATE users SET totp_secret = ? WHERE name = ?",
                (self._sealer.seal(secret.encode(), name.encode()), name),
            )
            return secret

    def provisioning_uri(self, name: str, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)

    def complete_enrolment(self, name: str, code: str, *, now: float | None = None) -> list[str]:
        """Check a first code against the pending secret; on success mark the user
        enrolled and return fresh recovery codes (shown once). Raises UserError."""
        secret = self.pending_totp_secret(name)
        step = _matching_step(secret, code, now)
        if step is None:
            raise UserError("the code does not match")
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "UPDATE users SET totp_enrolled = 1, totp_last_step = ? WHERE name = ?",
                    (step, name),
                )
                self._conn.execute("DELETE FROM recovery_codes WHERE user = ?", (name,))
                self._conn.executemany(
                    "INSERT INTO recovery_codes (user, code_hash) VALUES (?, ?)",
                    [(name, _hash_code(c)) for c in codes],
                )
                self._conn.execute("COMMIT")
            except Exception:
                self._conn.execute("ROLLBACK")
                raise
        return codes

    def verify_second_factor(self, name: str, code: str, *, now: float | None = None) -> bool:
        """A current TOTP code (each time step once) or an unused recovery code."""
        code = code.strip().replace(" ", "")
        with self._lock:
            row = self._conn.execute(
                "SELECT totp_secret, totp_enrolled, totp_last_step FROM users WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None or not row[1] or row[0] is None:
                return False
            secret = self._open_secret(name, row[0])
            step = _matching_step(secret, code, now)
            if step is not None:
                if step <= row[2]:
                    return False  # replay of a code already used
                self._conn.execute(
                    "UPDATE users SET totp_last_step = ? WHERE name = ?", (step, name)
                )
                return True
            cur = self._conn.execute(
                "DELETE FROM recovery_codes WHERE user = ? AND code_hash = ?",
                (name, _hash_code(code.upper())),
            )
            return cur.rowcount == 1

    def recovery_codes_left(self, name: str) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM recovery_codes WHERE user = ?", (name,)
                ).fetchone()[0]
            )

    def reset_totp(self, name: str) -> None:
        """Forget the second factor: the user enrols again at next login."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE users SET totp_secret = NULL, totp_enrolled = 0, totp_last_step = 0 "
                "WHERE name = ?",
                (name,),
            )
            self._conn.execute("DELETE FROM recovery_codes WHERE user = ?", (name,))
        if cur.rowcount == 0:
            raise UserError(f"no user {name!r}")

    def _open_secret(self, name: str, blob: bytes) -> str:
        return self._sealer.open(blob, name.encode()).decode()


def _parse_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        raise UserError(f"unknown role {role!r} (viewer, auditor or admin)") from exc


def _check_name(name: str) -> None:
    if not USER_NAME.match(name):
        raise UserError(
            "user name: 1-64 characters, letters, digits, '.', '_' or '-', starting "
            "with a letter or digit"
        )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password: at most {MAX_PASSWORD_LENGTH} characters")


def _matching_step(secret: str, code: str, now: float | None) -> int | None:
    """The TOTP time step (counter) this code belongs to, within the window, or None."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    t = time.time() if now is None else now
    current = int(t) // totp.interval
    for step in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _new_recovery_code() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read from paper
    return "".join(secrets.choice(alphabet) for _ in range(RECOVERY_CODE_LENGTH))


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
