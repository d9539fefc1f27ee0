"""Fixtures shared by every test layer: a data_dir with keys, and a throw-away PKI.

Layer-specific helpers live next to their tests (tests/<area>/_helpers.py); this file
stays small so that parallel work on different areas does not collide here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto.certs import Issued, issue, make_ca
from crypto.keys import Keyring, init_keys, load_keys

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled module older than its source (setup.py compiles
    gateway/scan and gateway/pipeline, and builds the C modules beside them; Python would
    import the stale extension, not the edited .py or .c)."""
    for compiled in (ROOT / "gateway").rglob("*.so"):
        stem = compiled.name.split(".", 1)[0]
        for source in (compiled.with_name(stem + ".py"), compiled.with_name(stem + ".c")):
            if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
                pytest.exit(f"{source.relative_to(ROOT)} changed since it was built: run make")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    init_keys(d)
    return d


@pytest.fixture
def keyring(data_dir: Path) -> Keyring:
    return load_keys(data_dir)


@dataclass
class TestPKI:
    """A CA with a localhost server certificate and a client certificate, on disk."""

    ca: Issued
    server: Issued
    client: Issued
    dir: Path

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


def make_pki(directory: Path, cn: str = "Portique Test CA") -> TestPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(cn)
    server = issue(ca, "localhost", sans=["localhost", "127.0.0.1"], server=True)
    client = issue(ca, "portique-client.test", client=True, server=False)
    (directory / "ca.pem").write_bytes(ca.cert_pem())
    server.write(directory / "server.pem", directory / "server.key")
    client.write(directory / "client.pem", directory / "client.key")
    return TestPKI(ca, server, client, directory)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))
