"""The vault: sealed identities, idempotent store, lookup, erasure, nothing in clear on disk."""

from __future__ import annotations

from pathlib import Path

from crypto.keys import Keyring
from gateway.scan.model import VaultEntry
from gateway.vault import VAULT_FILE, Vault

IDENTITY = "BERTHELOT Zoé (14/07/1961)"


def _entry(token: str = "PAT-7KQ3M-2XF9A", audience: str = "labo-a.fr") -> VaultEntry:  # noqa: S107
    return VaultEntry(token=token, audience=audience, patient="p-abc", identity=IDENTITY)


def test_store_then_lookup_returns_identity_per_audience(data_dir: Path, keyring: Keyring) -> None:
    with Vault.open(data_dir, keyring) as vault:
        vault.store([_entry(), _entry(audience="labo-b.fr")])
        assert vault.lookup("PAT-7KQ3M-2XF9A") == [("labo-a.fr", IDENTITY), ("labo-b.fr", IDENTITY)]
        assert vault.lookup("pat-7kq3m-2xf9a") == vault.lookup("PAT-7KQ3M-2XF9A")
        assert vault.lookup("PAT-00000-00000") == []


def test_store_is_idempotent_and_durable_across_reopen(data_dir: Path, keyring: Keyring) -> None:
    with Vault.open(data_dir, keyring) as vault:
        vault.store([_entry()])
        vault.store([_entry(), _entry()])
    with Vault.open(data_dir, keyring) as vault:
        assert vault.lookup("PAT-7KQ3M-2XF9A") == [("labo-a.fr", IDENTITY)]


def test_store_writes_only_the_missing_rows_and_sees_other_connections(
    data_dir: Path, keyring: Keyring
) -> None:
    """Rows already stored are skipped by a read, never by a memory of this process: a
    patient erased by another connection (the CLI beside the gateway) is stored again."""
    with Vault.open(data_dir, keyring) as serving:
        serving.store([_entry()])
        with Vault.open(data_dir, keyring) as cli:
            assert cli.forget_patient("p-abc") == 1
        newer = VaultEntry(
            token="PAT-33333-33333", audience="labo-a.fr", patient="p-n", identity="N"
        )
        serving.store([_entry(), newer])
        assert serving.lookup("PAT-7KQ3M-2XF9A") == [("labo-a.fr", IDENTITY)]
        assert serving.lookup("PAT-33333-33333") == [("labo-a.fr", "N")]
        other_identity = VaultEntry(
            token="PAT-33333-33333", audience="labo-a.fr", patient="p-n", identity="CHANGED"
        )
        serving.store([other_identity])
        assert serving.lookup("PAT-33333-33333") == [("labo-a.fr", "N")]


def test_identity_never_in_clear_on_disk(data_dir: Path, keyring: Keyring) -> None:
    with Vault.open(data_dir, keyring) as vault:
        vault.store([_entry()])
    raw = b"".join(p.read_bytes() for p in data_dir.glob(VAULT_FILE + "*"))
    assert b"BERTHELOT" not in raw and "Zoé".encode() not in raw and b"1961" not in raw


def test_forget_patient_removes_every_mapping(data_dir: Path, keyring: Keyring) -> None:
    with Vault.open(data_dir, keyring) as vault:
        vault.store([_entry(), _entry(audience="labo-b.fr"), _entry(token="PAT-11111-11111")])
        other = VaultEntry(token="PAT-22222-22222", audience="x", patient="p-other", identity="X Y")
        vault.store([other])
        assert vault.forget_patient("p-abc") == 3
        assert vault.lookup("PAT-7KQ3M-2XF9A") == []
        assert vault.lookup("PAT-22222-22222") == [("x", "X Y")]


def test_schema_version_recorded(data_dir: Path, keyring: Keyring) -> None:
    from gateway._sqlite import schema_version

    with Vault.open(data_dir, keyring) as vault:
        assert schema_version(vault._conn) == 1


def test_store_and_lookup_from_other_threads(data_dir: Path, keyring: Keyring) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Vault.open(data_dir, keyring) as vault, ThreadPoolExecutor(4) as pool:
        tokens = [f"PAT-{i:05d}-AAAAA" for i in range(40)]
        list(pool.map(lambda t: vault.store([_entry(token=t)]), tokens))
        found = list(pool.map(vault.lookup, tokens))
    assert all(f == [("labo-a.fr", IDENTITY)] for f in found)


def test_holds_all_knows_stored_rows_until_another_connection_writes(
    data_dir: Path, keyring: Keyring
) -> None:
    first = _entry()
    second = _entry(token="PAT-44444-44444")
    with Vault.open(data_dir, keyring) as serving:
        assert not serving.holds_all([first])
        serving.store([first])
        assert serving.holds_all([first])
        assert not serving.holds_all([first, second])  # one row is not stored
        with Vault.open(data_dir, keyring) as cli:
            assert cli.forget_patient("p-abc") == 1
        assert not serving.holds_all([first])  # another connection wrote: not trusted
        serving.store([first])  # stored again, as the next message naming them does
        assert serving.lookup("PAT-7KQ3M-2XF9A") == [("labo-a.fr", IDENTITY)]
        assert serving.holds_all([first])
        assert serving.forget_patient("p-abc") == 1
        assert not serving.holds_all([first])  # its own erasure forgets too


def test_holds_all_never_waits_for_a_busy_vault(data_dir: Path, keyring: Keyring) -> None:
    with Vault.open(data_dir, keyring) as vault:
        vault.store([_entry()])
        assert vault.holds_all([_entry()])
        with vault._lock:  # another thread is storing or looking up
            assert not vault.holds_all([_entry()])
