"""A real Portique for the console tests: SMTP in, scan engine with a roster,
pseudonymisation vault, audit trail, quarantine and queue, delivering to a real
SMTP sink on loopback; the console in front of it through ServiceBackend.

`RealStack` runs in whatever event loop starts it; `BackgroundStack` runs one in a
thread of its own, for the Playwright tests (whose sync API owns the main thread).

Invariant: `BackgroundStack` closes its loop only once the loop watches no socket any
more (else raises). A transport still open when its loop closes is dropped with its
socket, and the ResourceWarning surfaces at some later garbage collection, in whichever
test runs then. The console's TLS connections close asynchronously (close_notify, then
the peer's answer or EOF), so the clients (the browser) must be closed before the stack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import selectors
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from crypto.aead import Sealer
from crypto.keys import Keyring
from gateway._sqlite import open_database
from gateway.admin.app import BACKEND_KEY
from gateway.admin.service_backend import ServiceBackend, start_console
from gateway.admin.users import UserStore
from gateway.audit import AuditTrail
from gateway.config import AuditConfig, PracticeConfig
from gateway.scan import RosterPatient, build_engine
from gateway.service import Service
from gateway.vault import MIGRATIONS as VAULT_MIGRATIONS
from gateway.vault import VAULT_FILE, Vault
from tests.admin._console import FAST_HASHER, Account, create_accounts
from tests.relay._helpers import Sink, make_config, send_sync

T = TypeVar("T")

PATIENT = RosterPatient(
    key="p-dupont",
    last_name="Dupontel",
    first_name="Marie-Ange",
    birth_date=dt.date(1984, 3, 12),
    phone="06 11 22 33 44",
    email="marie-ange.dupontel@example.org",
)
# What must never appear outside the re-identification page.
PLANTED = ("Dupontel", "DUPONTEL", "Marie-Ange", "06 11 22 33 44", "12/03/1984")
PRACTICE = PracticeConfig(name="Cabinet du Parc", emails=("secretariat@cabinet.test",))
SENDER = "secretariat@cabinet.test"
LAB = "commandes@labo.test"
REVIEW = "controle@review.test"
ALERTS = "admin-alertes@cabinet.test"
ROUTES = [
    {"name": "lab", "match": ["*@labo.test"], "action": "pseudonymise", "connector": "relay"},
    {"name": "review", "match": ["*@review.test"], "action": "hold", "connector": "relay"},
    {"name": "other", "match": ["*"], "action": "reject-if-phi", "connector": "relay"},
]


def lab_order(message_id: str, subject: str = "Commande couronne") -> bytes:
    body = (
        "Bonjour,\r\n\r\nPour Mme Marie-Ange DUPONTEL, nee le 12/03/1984, "
        "tel. 06 11 22 33 44 : couronne zircone sur 36, teinte A3.\r\n\r\nDr Martin\r\n"
    )
    return (
        f"From: {SENDER}\r\nTo: {LAB}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


@dataclass
class RealStack:
    data_dir: Path
    keyring: Keyring
    ca_file: Path
    tls_cert: Path
    tls_key: Path
    sink: Sink = field(init=False)
    service: Service = field(init=False)
    trail: AuditTrail = field(init=False)
    vault: Vault = field(init=False)
    users: UserStore = field(init=False)
    accounts: dict[str, Account] = field(init=False)
    backend: ServiceBackend = field(init=False)
    runner: Any = field(init=False)
    base_url: str = field(init=False)

    async def start(self) -> RealStack:
        self.sink = await Sink().start()
        admin = {
            "listen": "127.0.0.1:0",
            "tls_cert": str(self.tls_cert),
            "tls_key": str(self.tls_key),
            "alert_email": ALERTS,
        }
        cfg = make_config(self.data_dir, self.sink.port, routes=ROUTES, extra={"admin": admin})
        engine = build_engine(
            patients=[PATIENT],
            practice=PRACTICE,
            digest_key=self.keyring.digest_key,
            pseudonym_key=self.keyring.pseudonym_key,
            engine="re",
        )
        # The service stores vault entries from worker threads.
        self.vault = Vault(
            open_database(self.data_dir / VAULT_FILE, VAULT_MIGRATIONS, check_same_thread=False),
            Sealer(self.keyring),
        )
        self.trail = AuditTrail.open(self.data_dir, self.keyring, AuditConfig())
        self.service = Service(cfg, engine=engine, vault=self.vault, keyring=self.keyring)
        await self.service.start(control_socket=False)
        self.users = await asyncio.to_thread(UserStore.open, self.data_dir, FAST_HASHER)
        self.accounts = await asyncio.to_thread(create_accounts, self.users)
        # As `portique serve` does it (gateway/admin/service_backend.py).
        self.runner = await start_console(
            self.service, self.trail, self.vault, self.keyring.digest_key, users=self.users
        )
        self.backend = self.runner.app[BACKEND_KEY]
        self.base_url = f"https://localhost:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.service.stop(grace=0.5)
        await self.sink.stop()
        self.users.close()
        self.trail.close()
        self.vault.close()

    async def send(self, data: bytes, rcpts: tuple[str, ...]) -> None:
        await asyncio.to_thread(send_sync, self.service.smtp_port, data, sender=SENDER, rcpts=rcpts)

    async def settle(self, within: float = 20.0) -> None:
        """Wait until every accepted message is processed and the queue is empty."""
        async with asyncio.timeout(within):
            while not (self.service.processing_idle() and not self.service.queue.list()):  # noqa: ASYNC110 - polling the service's state, which has no event
                await asyncio.sleep(0.05)


class BackgroundStack:
    """A RealStack in its own thread and event loop."""

    def __init__(self, stack: RealStack) -> None:
        self.stack = stack
        # Our own selector, so that what the loop still watches is public (get_map).
        self.selector = selectors.DefaultSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self.loop_own_fds = set(self.selector.get_map())  # its wake-up pipe
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RealStack:
        self.thread.start()
        self.run(self.stack.start())
        return self.stack

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.stack.stop())
            self.run(self.sockets_closed())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def sockets_closed(self, within: float = 10.0) -> None:
        """Wait until every connection of the stopped stack is closed (TLS ones finish
        their close_notify exchange after the server has let them go)."""
        try:
            async with asyncio.timeout(within):
                while self.watched_fds():  # noqa: ASYNC110 - the selector has no event
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(
                f"sockets still open {within:.0f} s after the stack stopped "
                f"(fds {sorted(self.watched_fds())}): was a client left connected?"
            ) from None

    def watched_fds(self) -> set[object]:
        return set(self.selector.get_map()) - self.loop_own_fds

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
