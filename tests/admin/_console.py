"""Helpers for the console tests: users with enrolled TOTP, and an HTTPS client that
logs in the way a browser does (CSRF token from the form, cookies, TOTP)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import argon2
import httpx
import pyotp

from gateway.admin.users import UserStore

PASSWORD = "correct horse battery staple"
# Still argon2id, with cheap parameters: the tests create and check many passwords on
# a 2-core machine; production uses argon2-cffi's defaults (64 MiB, t=3).
FAST_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Account:
    name: str
    role: str
    password: str = PASSWORD
    totp_secret: str = ""
    last_step: int = 0
    recovery_codes: list[str] = field(default_factory=list)

    def next_code(self) -> str:
        """A TOTP code for a time step not used yet (the server refuses replays)."""
        totp = pyotp.TOTP(self.totp_secret)
        step = max(int(time.time()) // 30, self.last_step + 1)
        self.last_step = step
        return totp.generate_otp(step)


def create_accounts(store: UserStore) -> dict[str, Account]:
    """admin and auditor enrolled with TOTP (enrolment one step in the past);
    viewer with a password only; `newadmin` not enrolled yet."""
    accounts: dict[str, Account] = {}
    for name, role in (("alice", "admin"), ("bob", "auditor"), ("victor", "viewer")):
        store.add_user(name, role, PASSWORD)
        account = Account(name, role)
        if role != "viewer":
            secret = store.pending_totp_secret(name)
            past = time.time() - 30
            account.recovery_codes = store.complete_enrolment(
                name, pyotp.TOTP(secret).at(past), now=past
            )
            account.totp_secret = secret
            account.last_step = int(past) // 30
        accounts[role] = account
    store.add_user("newadmin", "admin", PASSWORD)
    accounts["newadmin"] = Account("newadmin", "admin")
    return accounts


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


class ConsoleClient:
    def __init__(self, base_url: str, ca_file: Path, local_address: str | None = None) -> None:
        import ssl

        ctx = ssl.create_default_context(cafile=str(ca_file))
        transport = httpx.AsyncHTTPTransport(verify=ctx, local_address=local_address)
        self.http = httpx.AsyncClient(
            base_url=base_url, transport=transport, follow_redirects=False, timeout=30
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def csrf(self, path: str = "/login") -> str:
        r = await self.http.get(path)
        return csrf_of(r.text)

    async def post(self, path: str, data: dict[str, str], csrf_from: str = "") -> httpx.Response:
        token = await self.csrf(csrf_from or path)
        return await self.http.post(path, data={**data, "csrf": token})

    async def login_password(self, account: Account, password: str = "") -> httpx.Response:
        return await self.post(
            "/login", {"user": account.name, "password": password or account.password}
        )

    async def login(self, account: Account) -> None:
        r = await self.login_password(account)
        assert r.status_code == 303, r.text
        if account.totp_secret:
            assert r.headers["location"] == "/login/totp"
            r = await self.post("/login/totp", {"code": account.next_code()})
            assert r.status_code == 303, r.text
        assert r.headers["location"] == "/"
