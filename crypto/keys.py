"""Key files: create, load, rotate. Files are 0600 in `<data_dir>/keys` (mode 0700).

Keys and their lives:
- `data.N.key`     AES-256-GCM for spool, quarantine, vault and roster. Rotating adds
                   N+1, which encrypts from then on; older versions still decrypt.
- `digest.key`     HMAC-SHA256 key for keyed hashes of identifiers in findings/audit.
- `pseudonym.key`  HMAC-SHA256 key for patient tokens. Long-lived: rotating it breaks
                   the linkage labs rely on, so it is a separate, explicit action.
- `audit.ed25519`  Ed25519 private key (PKCS#8 PEM) signing audit checkpoints.

Invariant: a key file readable by group or others is refused (KeyringError).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import KeyringError

KEY_BYTES = 32
_DATA_KEY = re.compile(r"^data\.(\d+)\.key$")


def _write_secret(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_secret(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyringError(f"key file missing: {path.name} (run `portique keys init`)") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(f"key file {path.name} is readable by others; chmod 600 it")
    return path.read_bytes()


@dataclass(frozen=True)
class Keyring:
    data_keys: dict[int, bytes] = field(repr=False)
    digest_key: bytes = field(repr=False)
    pseudonym_key: bytes = field(repr=False)
    audit_signing_key: Ed25519PrivateKey = field(repr=False)

    @property
    def current_data_version(self) -> int:
        return max(self.data_keys)

    def __repr__(self) -> str:
        return f"Keyring(data_versions={sorted(self.data_keys)})"


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def init_keys(data_dir: Path) -> list[str]:
    """Create whatever key is missing; never overwrite one. Returns the names created."""
    kdir = keys_dir(data_dir)
    kdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(kdir, 0o700)
    created: list[str] = []
    if not any(_DATA_KEY.match(p.name) for p in kdir.iterdir()):
        _write_secret(kdir / "data.1.key", secrets.token_bytes(KEY_BYTES))
        created.append("data.1.key")
    for name in ("digest.key", "pseudonym.key"):
        if not (kdir / name).exists():
            _write_secret(kdir / name, secrets.token_bytes(KEY_BYTES))
            created.append(name)
    if not (kdir / "audit.ed25519").exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_secret(kdir / "audit.ed25519", pem)
        created.append("audit.ed25519")
    return created


def load_keys(data_dir: Path) -> Keyring:
    kdir = keys_dir(data_dir)
    if not kdir.is_dir():
        raise KeyringError("no keys directory (run `portique keys init`)")
    data_keys: dict[int, bytes] = {}
    for p in kdir.iterdir():
        m = _DATA_KEY.match(p.name)
        if m:
            data_keys[int(m.group(1))] = _check_len(p.name, _read_secret(p))
    if not data_keys:
        raise KeyringError("no data key (run `portique keys init`)")
    try:
        signing = serialization.load_pem_private_key(_read_secret(kdir / "audit.ed25519"), None)
    except ValueError as exc:
        raise KeyringError("audit.ed25519 is not a PEM Ed25519 private key") from exc
    if not isinstance(signing, Ed25519PrivateKey):
        raise KeyringError("audit.ed25519 is not an Ed25519 key")
    return Keyring(
        data_keys=data_keys,
        digest_key=_check_len("digest.key", _read_secret(kdir / "digest.key")),
        pseudonym_key=_check_len("pseudonym.key", _read_secret(kdir / "pseudonym.key")),
        audit_signing_key=signing,
    )


def _check_len(name: str, raw: bytes) -> bytes:
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"{name}: expected {KEY_BYTES} bytes")
    return raw


def rotate_data_key(data_dir: Path) -> int:
    """Add a new data key version; it encrypts from now on. Returns the new version."""
    ring = load_keys(data_dir)
    version = ring.current_data_version + 1
    _write_secret(keys_dir(data_dir) / f"data.{version}.key", secrets.token_bytes(KEY_BYTES))
    return version


def rotate_pseudonym_key(data_dir: Path) -> None:
    """Replace the pseudonym key. Every lab's tokens change: an explicit, audited act."""
    kdir = keys_dir(data_dir)
    old = kdir / "pseudonym.key"
    n = 1
    while (kdir / f"pseudonym.retired.{n}.key").exists():
        n += 1
    os.replace(old, kdir / f"pseudonym.retired.{n}.key")
    _write_secret(old, secrets.token_bytes(KEY_BYTES))
