"""Console fixtures: a real HTTPS server on an ephemeral port, over the fake backend."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.admin import start_admin
from gateway.admin.users import UserStore
from gateway.config import AdminConfig
from tests.admin._console import FAST_HASHER, Account, ConsoleClient, create_accounts
from tests.admin._fake_backend import FakeBackend, sample_quarantine, sample_queue_entry
from tests.conftest import TestPKI


@dataclass
class Console:
    base_url: str
    backend: FakeBackend
    users: UserStore
    accounts: dict[str, Account]
    ca_file: Path
    clients: list[ConsoleClient]

    def client(self, local_address: str | None = None) -> ConsoleClient:
        c = ConsoleClient(self.base_url, self.ca_file, local_address)
        self.clients.append(c)
        return c


@pytest.fixture
def admin_config(pki: TestPKI) -> AdminConfig:
    return AdminConfig(
        listen="127.0.0.1:0",
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        login_max_failures=5,
        login_window=300.0,
    )


@pytest.fixture
async def console(
    data_dir: Path, pki: TestPKI, admin_config: AdminConfig
) -> AsyncIterator[Console]:
    users = UserStore.open(data_dir, FAST_HASHER)
    accounts = create_accounts(users)
    backend = FakeBackend()
    backend.quarantine["h-1"] = sample_quarantine("h-1")
    backend.quarantine["h-2"] = sample_quarantine("h-2")
    backend.queue["q-1"] = sample_queue_entry("q-1")
    runner = await start_admin(backend, admin_config, data_dir, users=users)
    host, port = runner.addresses[0][:2]
    console = Console(f"https://localhost:{port}", backend, users, accounts, pki.ca_file, [])
    try:
        yield console
    finally:
        for c in console.clients:
            await c.aclose()
        await runner.cleanup()
        users.close()


def with_config(config: AdminConfig, **changes: object) -> AdminConfig:
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
