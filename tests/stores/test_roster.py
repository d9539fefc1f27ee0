"""Roster import: delimiters, encodings, French/English headers, encryption, replace, forget."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from crypto.keys import Keyring
from gateway.roster import (
    ROSTER_FILE,
    RosterError,
    find_patient_keys,
    forget_patient,
    import_roster,
    load_roster,
)
from gateway.scan.model import VaultEntry
from gateway.vault import Vault

FR_CSV = (
    "nom;prénom;date_naissance;nir;téléphone;email;adresse\n"
    "Lefèvre;Élodie;1979-05-21;279052A00100159;06 12 34 56 78;elodie.l@example.org;4 rue Vauban\n"
    "De La Fontaine;Jean-Pierre;03/11/1950;;;;\n"
)
EN_CSV = "last_name,first_name,birth_date,phone\nOkafor,Chidi,1990-01-02,+44 20 7946 0958\n"


def _write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "roster.csv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_import_french_headers_any_encoding(
    tmp_path: Path, data_dir: Path, keyring: Keyring, encoding: str
) -> None:
    assert import_roster(data_dir, keyring, _write(tmp_path, FR_CSV, encoding)) == 2
    patients = load_roster(data_dir, keyring)
    first = patients[0]
    assert (first.last_name, first.first_name) == ("Lefèvre", "Élodie")
    assert first.birth_date == date(1979, 5, 21)
    assert first.phone == "06 12 34 56 78" and first.address == "4 rue Vauban"
    assert patients[1].birth_date == date(1950, 11, 3)
    assert "Lefèvre" not in repr(first) and "Élodie" not in repr(first)


def test_english_headers_and_comma(tmp_path: Path, data_dir: Path, keyring: Keyring) -> None:
    import_roster(data_dir, keyring, _write(tmp_path, EN_CSV))
    (patient,) = load_roster(data_dir, keyring)
    assert patient.first_name == "Chidi" and patient.phone == "+44 20 7946 0958"


def test_roster_encrypted_and_replaced(tmp_path: Path, data_dir: Path, keyring: Keyring) -> None:
    import_roster(data_dir, keyring, _write(tmp_path, FR_CSV))
    raw = (data_dir / ROSTER_FILE).read_bytes()
    assert b"Lef" not in raw and b"Fontaine" not in raw
    assert (data_dir / ROSTER_FILE).stat().st_mode & 0o077 == 0
    import_roster(data_dir, keyring, _write(tmp_path, EN_CSV))
    assert [p.last_name for p in load_roster(data_dir, keyring)] == ["Okafor"]


def test_keys_stable_across_imports(tmp_path: Path, data_dir: Path, keyring: Keyring) -> None:
    import_roster(data_dir, keyring, _write(tmp_path, FR_CSV))
    before = [p.key for p in load_roster(data_dir, keyring)]
    import_roster(
        data_dir, keyring, _write(tmp_path, FR_CSV.replace(";", ",").replace("4 rue Vauban", ""))
    )
    assert [p.key for p in load_roster(data_dir, keyring)] == before


def test_missing_column_and_bad_date_name_no_value(
    tmp_path: Path, data_dir: Path, keyring: Keyring
) -> None:
    with pytest.raises(RosterError, match="date_naissance"):
        import_roster(data_dir, keyring, _write(tmp_path, "nom;prenom\nMartin;Luc\n"))
    with pytest.raises(RosterError, match="line 2") as info:
        import_roster(data_dir, keyring, _write(tmp_path, "nom;prenom;ddn\nMartin;Luc;31/02/19x\n"))
    assert "Martin" not in str(info.value)


def test_no_roster_loads_empty(data_dir: Path, keyring: Keyring) -> None:
    assert load_roster(data_dir, keyring) == []


def test_forget_by_name_removes_roster_and_vault(
    tmp_path: Path, data_dir: Path, keyring: Keyring
) -> None:
    import_roster(data_dir, keyring, _write(tmp_path, FR_CSV))
    target = load_roster(data_dir, keyring)[0]
    with Vault.open(data_dir, keyring) as vault:
        vault.store([VaultEntry("PAT-AAAAA-AAAAA", "lab.fr", target.key, target.identity())])
    keys = find_patient_keys(
        load_roster(data_dir, keyring), "LEFEVRE Elodie", date(1979, 5, 21), keyring.pseudonym_key
    )
    assert target.key in keys
    assert forget_patient(data_dir, keyring, keys) == (1, 1)
    assert [p.last_name for p in load_roster(data_dir, keyring)] == ["De La Fontaine"]


def _portique(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    portique = Path(sys.executable).parent / "portique"
    return subprocess.run(
        [str(portique), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_cli_import_forget_by_token_and_reidentify(
    tmp_path: Path, data_dir: Path, keyring: Keyring
) -> None:
    config = tmp_path / "portique.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    csv_path = _write(tmp_path, FR_CSV)
    done = _portique("roster", "import", str(csv_path), "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 patients" in done.stdout and "Lef" not in done.stdout
    patient = load_roster(data_dir, keyring)[0]
    with Vault.open(data_dir, keyring) as vault:
        vault.store([VaultEntry("PAT-7KQ3M-2XF9A", "labo-a.fr", patient.key, patient.identity())])
    shown = _portique(
        "reidentify", "PAT-7KQ3M-2XF9A", "--reason", "lab query 42", "-c", str(config), cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert "LEFÈVRE Élodie (21/05/1979)" in shown.stdout and "labo-a.fr" in shown.stdout
    from gateway.audit import AuditTrail
    from gateway.config import AuditConfig

    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        records, total = trail.search(kind="reidentified")
    assert total == 1
    assert records[0].fields == {
        "token": "PAT-7KQ3M-2XF9A",
        "audience": "labo-a.fr",
        "reason": "lab query 42",
    }
    assert records[0].actor and records[0].actor != "system"
    audit_bytes = b"".join(p.read_bytes() for p in data_dir.glob("audit*")).upper()
    assert "LEFÈVRE".encode() not in audit_bytes and b"1979" not in audit_bytes
    gone = _portique(
        "roster", "forget", "--token", "PAT-7KQ3M-2XF9A", "-c", str(config), cwd=tmp_path
    )
    assert gone.returncode == 0, gone.stderr
    assert len(load_roster(data_dir, keyring)) == 1
    with Vault.open(data_dir, keyring) as vault:
        assert vault.lookup("PAT-7KQ3M-2XF9A") == []


def test_forget_by_name_reaches_unrostered_vault_entries(data_dir: Path, keyring: Keyring) -> None:
    from gateway.scan import TextField, TransformPolicy, build_engine

    scan = build_engine(digest_key=keyring.digest_key, pseudonym_key=keyring.pseudonym_key)
    fields = [TextField("Patiente : LEGRAND Sophie")]
    result = scan.rewrite_fields(fields, scan.scan_fields(fields), TransformPolicy(audience="lab"))
    with Vault.open(data_dir, keyring) as vault:
        vault.store(result.vault_entries)
    keys = find_patient_keys([], "Sophie Legrand", None, keyring.pseudonym_key, keyring.digest_key)
    assert forget_patient(data_dir, keyring, keys) == (0, 1)


def test_import_keys_equal_normalised_identity_keys(
    tmp_path: Path, data_dir: Path, keyring: Keyring
) -> None:
    """The import's fast path (folding the whole file) gives the documented keys."""
    from crypto.pseudonym import patient_key
    from gateway.scan.patients import normalise_identity

    import_roster(data_dir, keyring, _write(tmp_path, FR_CSV + "Œuvray;Anaïs ;1999-12-31\n"))
    for p in load_roster(data_dir, keyring):
        expected = normalise_identity(p.last_name, p.first_name, p.birth_date)
        assert p.key == patient_key(keyring.pseudonym_key, expected)
