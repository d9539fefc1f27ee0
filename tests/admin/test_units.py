"""Console building blocks without a server: users, sessions, the rate limiter,
language negotiation, the attachment stripper, and the `portique admin` CLI."""

from __future__ import annotations

import io
import re
import sqlite3
from pathlib import Path

import pyotp
import pytest

from gateway.admin import auth, i18n
from gateway.admin.app import HERE
from gateway.admin.auth import LoginLimiter, SessionStore, Stage
from gateway.admin.service_backend import without_attachments
from gateway.admin.users import Role, UserError, UserStore
from gateway.cli import main
from tests.admin._console import FAST_HASHER, PASSWORD


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_passwords_are_argon2id_and_secrets_are_not_stored_in_clear(data_dir: Path) -> None:
    store = UserStore.open(data_dir, FAST_HASHER)
    store.add_user("alice", "admin", PASSWORD)
    secret = store.pending_totp_secret("alice")
    codes = store.complete_enrolment("alice", pyotp.TOTP(secret).now())
    store.close()
    raw = (data_dir / "admin" / "users.db").read_bytes()
    for wal in (data_dir / "admin").glob("users.db-wal"):
        raw += wal.read_bytes()
    assert PASSWORD.encode() not in raw
    assert secret.encode() not in raw
    for code in codes:
        assert code.encode() not in raw
    conn = sqlite3.connect(data_dir / "admin" / "users.db")
    [pw_hash] = conn.execute("SELECT password_hash FROM users").fetchone()
    conn.close()
    assert pw_hash.startswith("$argon2id$")


def test_user_rules(data_dir: Path) -> None:
    store = UserStore.open(data_dir, FAST_HASHER)
    with pytest.raises(UserError, match="at least 12"):
        store.add_user("alice", "admin", "short")
    with pytest.raises(UserError, match="unknown role"):
        store.add_user("alice", "root", PASSWORD)
    with pytest.raises(UserError, match="user name"):
        store.add_user("../alice", "admin", PASSWORD)
    store.add_user("alice", "admin", PASSWORD)
    with pytest.raises(UserError, match="already exists"):
        store.add_user("alice", "viewer", PASSWORD)
    assert store.verify_password("alice", PASSWORD) is not None
    assert store.verify_password("alice", PASSWORD + "x") is None
    assert store.verify_password("nobody", PASSWORD) is None
    assert store.verify_password("alice", "x" * 5000) is None
    assert Role.ADMIN.allows(Role.AUDITOR) and not Role.VIEWER.allows(Role.AUDITOR)
    assert Role.AUDITOR.requires_totp and not Role.VIEWER.requires_totp
    store.close()


def test_totp_replay_and_reset(data_dir: Path) -> None:
    store = UserStore.open(data_dir, FAST_HASHER)
    store.add_user("alice", "admin", PASSWORD)
    secret = store.pending_totp_secret("alice")
    assert store.pending_totp_secret("alice") == secret  # stable until enrolled
    t = 1_800_000_000.0
    totp = pyotp.TOTP(secret)
    with pytest.raises(UserError):
        store.complete_enrolment("alice", "12345", now=t)
    store.complete_enrolment("alice", totp.at(t), now=t)
    assert not store.verify_second_factor("alice", totp.at(t), now=t)  # replay
    assert store.verify_second_factor("alice", totp.at(t + 30), now=t + 30)
    assert not store.verify_second_factor("alice", totp.at(t + 300), now=t + 30)  # too far
    store.reset_totp("alice")
    user = store.get("alice")
    assert user is not None and not user.totp_enrolled
    assert store.pending_totp_secret("alice") != secret
    assert store.recovery_codes_left("alice") == 0
    store.close()


def test_sessions_expire_rotate_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    store = SessionStore(idle_timeout=60, clock=clock)
    s = store.new()
    sid, csrf = s.sid, s.csrf
    assert store.get(sid) is s
    store.rotate(s)
    assert store.get(sid) is None and s.sid != sid and s.csrf != csrf
    assert s.csrf_ok(s.csrf) and not s.csrf_ok(csrf) and not s.csrf_ok("")
    clock.now += 59
    assert store.get(s.sid) is s  # touched: idle time restarts
    clock.now += 61
    assert store.get(s.sid) is None

    monkeypatch.setattr(auth, "MAX_SESSIONS", 5)
    staff = store.new()
    staff.stage = Stage.AUTHENTICATED
    for _ in range(20):
        store.new()
    assert store.get(staff.sid) is staff  # anonymous sessions are evicted first
    assert len(store._sessions) == 5


def test_login_limiter_window() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(3):
        assert not limiter.blocked("user:a", "ip:1")
        limiter.fail("user:a", "ip:1")
    assert limiter.blocked("user:a") and limiter.blocked("ip:1")
    assert not limiter.blocked("user:b", "ip:2")
    clock.now += 61
    assert not limiter.blocked("user:a", "ip:1")
    limiter.fail("user:a")
    limiter.succeed("user:a")
    assert not limiter.blocked("user:a")


def test_language_negotiation() -> None:
    assert i18n.negotiate(None, None, "fr") == "fr"
    assert i18n.negotiate(None, "en-GB,en;q=0.9", "fr") == "en"
    assert i18n.negotiate(None, "de-DE,en;q=0.5,fr;q=0.8", "fr") == "fr"
    assert i18n.negotiate(None, "de-DE,de;q=0.9", "en") == "en"
    assert i18n.negotiate("en", "fr-FR", "fr") == "en"
    assert i18n.negotiate("xx", "garbage;q=zz,,;", "fr") == "fr"


def test_every_text_used_is_translated() -> None:
    used: set[str] = set()
    for path in [*(HERE / "templates").glob("*.html"), HERE / "app.py"]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']""", path.read_text()))
        used |= set(
            re.findall(
                r"""["']((?:login|totp|error|q|queue|reid|lockdown|refused)\.(?!html\b)[a-z_]+)["']""",
                path.read_text(),
            )
        )
    used |= {
        f"refused.{r}" for r in ("reason_required", "not_found", "rescan_failed", "unavailable")
    }
    used |= {f"role.{r.value}" for r in Role}
    missing = sorted(k for k in used if k not in i18n.MESSAGES)
    assert not missing
    for key, (fr, en) in i18n.MESSAGES.items():
        assert fr and en, key


def test_without_attachments_keeps_text_only() -> None:
    raw = (
        b"From: a@cabinet.test\r\nTo: b@labo.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b'--b\r\nContent-Type: multipart/alternative; boundary="c"\r\n\r\n'
        b"--c\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
        b"--c\r\nContent-Type: text/html\r\n\r\n<p>body html</p>\r\n--c--\r\n"
        b"--b\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n"
        b'--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename="x.txt"\r\n\r\nATTACHED\r\n'
        b"--b--\r\n"
    )
    out, removed = without_attachments(raw)
    assert removed == 2
    assert b"body text" in out and b"body html" in out
    assert b"PNGDATA" not in out and b"ATTACHED" not in out
    assert b"\r\n" in out and b"\n\n" not in out.replace(b"\r\n", b"")


def test_cli_add_user_and_reset_totp(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = data_dir.parent / "portique.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert (
        main(
            [
                "admin",
                "add-user",
                "alice",
                "--role",
                "auditor",
                "--password-stdin",
                "-c",
                str(config),
            ]
        )
        == 0
    )
    assert "alice created with role auditor" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert (
        main(["admin", "add-user", "bob", "--role", "admin", "--password-stdin", "-c", str(config)])
        == 2
    )
    err = capsys.readouterr().err
    assert "at least 12" in err and "short" not in err
    store = UserStore.open(data_dir)
    assert store.verify_password("alice", PASSWORD) is not None
    secret = store.pending_totp_secret("alice")
    store.complete_enrolment("alice", pyotp.TOTP(secret).now())
    store.close()
    assert main(["admin", "reset-totp", "alice", "-c", str(config)]) == 0
    assert main(["admin", "reset-totp", "nobody", "-c", str(config)]) == 2
    assert main(["admin", "list-users", "-c", str(config)]) == 0
    assert "alice\tauditor\t-" in capsys.readouterr().out


async def test_console_off_when_disabled_in_config() -> None:
    from types import SimpleNamespace

    from gateway.admin import start_console
    from gateway.config import parse_config

    service = SimpleNamespace(cfg=parse_config({"admin": {"enabled": False}}))
    assert await start_console(service, None, None, b"") is None  # type: ignore[arg-type]
