"""Security properties of the console over real HTTPS: headers, cookies, CSRF,
login rate limit, sessions, roles and the second factor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyotp

from gateway.admin import start_admin
from gateway.admin.app import COOKIE, SECURITY_HEADERS
from gateway.config import AdminConfig
from tests.admin._console import ConsoleClient, csrf_of
from tests.admin._fake_backend import FakeBackend
from tests.admin.conftest import Console, with_config


def assert_security_headers(headers: object) -> None:
    h = headers  # httpx.Headers
    csp = h["content-security-policy"]  # type: ignore[index]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert h["x-frame-options"] == "DENY"  # type: ignore[index]
    assert h["x-content-type-options"] == "nosniff"  # type: ignore[index]
    assert h["referrer-policy"] == "no-referrer"  # type: ignore[index]
    assert h["strict-transport-security"].startswith("max-age=")  # type: ignore[index]
    for name, value in SECURITY_HEADERS.items():
        assert h[name] == value  # type: ignore[index]


async def test_every_response_carries_security_headers(console: Console) -> None:
    anon = console.client()
    responses = [
        await anon.http.get("/login"),
        await anon.http.get("/"),  # redirect to login
        await anon.http.get("/static/style.css"),
        await anon.http.get("/no/such/page"),
        await anon.http.post("/login", data={"user": "x"}),  # CSRF refusal
    ]
    admin = console.client()
    await admin.login(console.accounts["admin"])
    responses += [await admin.http.get(p) for p in ("/", "/audit", "/quarantine", "/queue")]
    viewer = console.client()
    await viewer.login(console.accounts["viewer"])
    responses.append(await viewer.http.get("/audit"))  # 403
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200, 303, 403, 404]
    for r in responses:
        assert_security_headers(r.headers)


async def test_session_cookie_flags(console: Console) -> None:
    client = console.client()
    r = await client.http.get("/login")
    cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
    session_cookies = [c for c in cookies if c.startswith(COOKIE + "=")]
    assert session_cookies, cookies
    for raw in session_cookies:
        attributes = {a.strip().split("=")[0].lower(): a.strip() for a in raw.split(";")[1:]}
        assert "secure" in attributes
        assert "httponly" in attributes
        assert attributes["samesite"].lower() == "samesite=strict"
        assert attributes["path"] == "Path=/"
        assert "domain" not in attributes  # __Host- prefix rules
    # The id changes at login (no fixation).
    before = client.http.cookies[COOKIE]
    await client.login(console.accounts["admin"])
    assert client.http.cookies[COOKIE] != before


async def test_post_without_or_with_foreign_csrf_token_is_refused(console: Console) -> None:
    admin = console.client()
    await admin.login(console.accounts["admin"])
    other = console.client()
    foreign_token = await other.csrf("/login")

    for data in (
        {"state": "on"},
        {"state": "on", "csrf": ""},
        {"state": "on", "csrf": foreign_token},
    ):
        r = await admin.http.post("/lockdown", data=data)
        assert r.status_code == 403
        assert console.backend.lockdown is False
    assert "lockdown" not in console.backend.kinds()

    # Login form itself is protected too: no password check, no audit record.
    logins_before = console.backend.kinds().count("admin_login")
    r = await other.http.post("/login", data={"user": "alice", "password": "x" * 12})
    assert r.status_code == 403
    r = await other.http.post("/login", data={"user": "alice", "password": "y" * 12, "csrf": "bad"})
    assert r.status_code == 403
    assert console.backend.kinds().count("admin_login") == logins_before

    # With the session's own token, the same POST works.
    token = csrf_of((await admin.http.get("/")).text)
    r = await admin.http.post("/lockdown", data={"state": "on", "csrf": token})
    assert r.status_code == 303
    assert console.backend.lockdown is True
    assert console.backend.audit[-1].kind == "lockdown"
    assert console.backend.audit[-1].actor == "alice"


async def test_login_rate_limited_per_user(console: Console) -> None:
    admin = console.accounts["admin"]
    attacker = console.client(local_address="127.0.0.2")
    for _ in range(5):
        r = await attacker.login_password(admin, password="wrong password!")
        assert r.status_code == 401
    # From another address, even the right password is refused for this user now.
    legit = console.client(local_address="127.0.0.3")
    r = await legit.login_password(admin)
    assert r.status_code == 429
    assert "Trop de tentatives" in r.text
    # Other users from that other address are not affected.
    await legit.login(console.accounts["auditor"])
    reasons = [
        (r.actor, r.fields["reason"], r.fields["ok"])
        for r in console.backend.audit
        if r.kind == "admin_login"
    ]
    assert reasons.count(("alice", "bad_password", False)) == 5
    assert ("alice", "rate_limited", False) in reasons
    assert ("bob", "totp", True) in reasons


async def test_login_rate_limited_per_ip(console: Console) -> None:
    attacker = console.client(local_address="127.0.0.4")
    for i in range(5):
        r = await attacker.post("/login", {"user": f"guess{i}", "password": "wrong password!"})
        assert r.status_code == 401
    r = await attacker.login_password(console.accounts["viewer"])
    assert r.status_code == 429
    # The same user from another address still gets in.
    await console.client(local_address="127.0.0.5").login(console.accounts["viewer"])


async def test_wrong_totp_counts_as_a_failure_and_is_audited(console: Console) -> None:
    admin = console.accounts["admin"]
    client = console.client()
    r = await client.login_password(admin)
    assert r.headers["location"] == "/login/totp"
    good = admin.next_code()
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    r = await client.post("/login/totp", {"code": wrong})
    assert r.status_code == 401
    assert "Code incorrect" in r.text
    # Still not logged in.
    assert (await client.http.get("/")).headers["location"] == "/login"
    last = console.backend.audit[-1]
    assert (last.kind, last.actor, last.fields["ok"], last.fields["reason"]) == (
        "admin_login",
        "alice",
        False,
        "bad_second_factor",
    )


async def test_totp_code_cannot_be_replayed(console: Console) -> None:
    admin = console.accounts["admin"]
    first = console.client()
    await first.login(admin)
    used = pyotp.TOTP(admin.totp_secret).generate_otp(admin.last_step)
    second = console.client()
    await second.login_password(admin)
    r = await second.post("/login/totp", {"code": used})
    assert r.status_code == 401


async def test_recovery_code_works_once(console: Console) -> None:
    admin = console.accounts["admin"]
    code = admin.recovery_codes[0]
    for expected in (303, 401):
        client = console.client()
        await client.login_password(admin)
        r = await client.post("/login/totp", {"code": code})
        assert r.status_code == expected
    assert console.users.recovery_codes_left("alice") == 9


async def test_first_login_enrols_totp_with_qr_code_and_recovery_codes(console: Console) -> None:
    client = console.client()
    r = await client.login_password(console.accounts["newadmin"])
    assert r.headers["location"] == "/login/enrol"
    # Not logged in until enrolled.
    assert (await client.http.get("/quarantine")).status_code == 303
    page = (await client.http.get("/login/enrol")).text
    assert 'src="data:image/png;base64,' in page
    assert "otpauth://totp/Portique:newadmin?secret=" in page
    secret = page.split('id="totp-secret">')[1].split("<")[0]
    r = await client.post(
        "/login/enrol",
        {"code": "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"},
        csrf_from="/login/enrol",
    )
    assert r.status_code == 401
    r = await client.post(
        "/login/enrol", {"code": pyotp.TOTP(secret).now()}, csrf_from="/login/enrol"
    )
    assert r.status_code == 200
    assert r.text.count("<li><code>") == 10
    assert (await client.http.get("/quarantine")).status_code == 200
    assert console.backend.audit[-1].fields["reason"] == "totp_enrolled"


async def test_roles(console: Console) -> None:
    viewer = console.client()
    await viewer.login(console.accounts["viewer"])  # password only
    assert (await viewer.http.get("/")).status_code == 200
    for path in (
        "/audit",
        "/audit/export",
        "/quarantine",
        "/quarantine/h-1",
        "/queue",
        "/reidentify",
    ):
        r = await viewer.http.get(path)
        assert r.status_code == 403, path
        assert "Accès refusé" in r.text
    token = csrf_of((await viewer.http.get("/")).text)
    for path in ("/lockdown", "/quarantine/h-1/delete", "/queue/q-1/retry", "/reidentify"):
        r = await viewer.http.post(
            path, data={"csrf": token, "state": "on", "token": "t", "reason": "r"}
        )
        assert r.status_code == 403, path
    assert console.backend.lockdown is False and "h-1" in console.backend.quarantine

    auditor = console.client()
    await auditor.login(console.accounts["auditor"])
    assert (await auditor.http.get("/audit")).status_code == 200
    assert (await auditor.http.get("/quarantine")).status_code == 403
    assert (await auditor.http.get("/reidentify")).status_code == 403

    anonymous = console.client()
    for path in ("/", "/audit", "/quarantine", "/reidentify"):
        r = await anonymous.http.get(path)
        assert (r.status_code, r.headers["location"]) == (303, "/login")


async def test_idle_session_expires(
    data_dir: Path, admin_config: AdminConfig, console: Console
) -> None:
    # Long enough for the login's requests on a loaded 2-core machine (0.5 s was not:
    # the pre-login session expired between GET and POST /login).
    config = with_config(admin_config, session_idle_timeout=2.0)
    runner = await start_admin(FakeBackend(), config, data_dir, users=console.users)
    try:
        port = runner.addresses[0][1]
        client = ConsoleClient(f"https://localhost:{port}", console.ca_file)
        try:
            await client.login(console.accounts["viewer"])
            assert (await client.http.get("/")).status_code == 200
            await asyncio.sleep(2.3)
            r = await client.http.get("/")
            assert (r.status_code, r.headers["location"]) == (303, "/login")
            assert "Session expirée" in (await client.http.get("/login")).text
        finally:
            await client.aclose()
    finally:
        await runner.cleanup()


async def test_self_signed_certificate_when_none_configured(
    data_dir: Path, console: Console
) -> None:
    runner = await start_admin(
        FakeBackend(), AdminConfig(listen="127.0.0.1:0"), data_dir, users=console.users
    )
    try:
        port = runner.addresses[0][1]
        assert (data_dir / "admin" / "tls.pem").exists()
        assert (data_dir / "admin" / "tls.key").stat().st_mode & 0o077 == 0
        client = ConsoleClient(f"https://localhost:{port}", data_dir / "admin" / "tls.pem")
        try:
            assert (await client.http.get("/login")).status_code == 200
        finally:
            await client.aclose()
    finally:
        await runner.cleanup()
