"""The practice's patient roster: CSV import, encrypted storage, load, and erasure.

Trust boundary: the CSV is operator-supplied and holds PHI. It is parsed here and
stored only sealed (AES-256-GCM, crypto.aead) in `<data_dir>/roster.sealed`, mode 0600.
Errors name a line and a column, never a value.

Invariants:
- A new import replaces the roster atomically (write a temporary file, fsync, rename,
  fsync the folder): a crash leaves the old roster or the new one, never a mix.
- Patient keys are `crypto.pseudonym.patient_key` over the normalised name and birth
  date, so a patient keeps the same key (and the labs the same token) across imports.
- The CSV's delimiter (";" or ",") and encoding (UTF-8, with or without BOM, else
  cp1252) are detected; headers may be French or English.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from crypto.aead import Sealer
from crypto.keys import Keyring
from crypto.pseudonym import patient_key
from gateway.errors import PortiqueError
from gateway.scan._fold import fold
from gateway.scan.patients import (
    RosterPatient,
    normalise_folded_name,
    normalise_identity,
    normalise_name,
)

ROSTER_FILE = "roster.sealed"
_AAD = b"roster:v1"
# A roster larger than this is refused (bytes): 100,000 patients with every optional
# column take about 15 MB; 200 MB is far beyond any practice and bounds memory.
MAX_CSV_BYTES = 200 * 1024 * 1024

HEADER_ALIASES = {
    "last_name": ("nom", "last_name", "lastname", "surname", "nom_naissance", "nom de famille"),
    "first_name": ("prenom", "first_name", "firstname", "given_name"),
    "birth_date": ("date_naissance", "date_de_naissance", "birth_date", "birthdate", "ddn", "dob"),
    "nir": ("nir", "ins", "numero_secu", "secu"),
    "phone": ("telephone", "phone", "tel", "portable", "mobile"),
    "email": ("email", "e-mail", "courriel", "mail"),
    "address": ("adresse", "address"),
}


class RosterError(PortiqueError):
    """A roster file that cannot be read or imported. Never carries patient data."""


def _header_key(raw: str) -> str | None:
    name = normalise_name(raw.strip().strip('"')).replace(" ", "_")
    for field_name, aliases in HEADER_ALIASES.items():
        if name in {a.replace(" ", "_") for a in aliases}:
            return field_name
    return None


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_FRENCH_DATE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


def _parse_date(text: str, line: int) -> date | None:
    """YYYY-MM-DD or JJ/MM/AAAA (also with - or .). strptime is 20x slower per row."""
    text = text.strip()
    if not text:
        return None
    try:
        if m := _ISO_DATE.fullmatch(text):
            return date(int(m[1]), int(m[2]), int(m[3]))
        if m := _FRENCH_DATE.fullmatch(text):
            return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        pass
    raise RosterError(f"line {line}: birth date is not YYYY-MM-DD or JJ/MM/AAAA")


def parse_roster_csv(raw: bytes, pseudonym_key: bytes) -> list[RosterPatient]:
    """Parse a roster CSV into patients with stable keys. Raises RosterError."""
    if len(raw) > MAX_CSV_BYTES:
        raise RosterError(f"roster file larger than {MAX_CSV_BYTES // (1024 * 1024)} MB")
    text = _decode(raw)
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") >= first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise RosterError("roster file is empty") from exc
    columns = {}
    for position, name in enumerate(header):
        key = _header_key(name)
        if key is not None and key not in columns:
            columns[key] = position
    missing = [c for c in ("last_name", "first_name", "birth_date") if c not in columns]
    if missing:
        raise RosterError(
            "roster header lacks column(s): " + ", ".join(missing) + " (nom;prenom;date_naissance)"
        )
    patients: list[RosterPatient] = []
    seen: set[str] = set()
    order = ("last_name", "first_name", "birth_date", "nir", "phone", "email", "address")
    positions = [columns.get(name, -1) for name in order]
    # The same CSV, folded (accents off, lower-case, one character per character): its
    # cells are the normalised names, so each name is not folded again on its own
    # (a third of the import time for 100,000 rows).
    folded_reader = csv.reader(io.StringIO(fold(text).lower(), newline=""), delimiter=delimiter)
    next(folded_reader)
    last_at, first_at = columns["last_name"], columns["first_name"]
    for line, (row, folded_row) in enumerate(zip(reader, folded_reader, strict=True), start=2):
        if not any(cell.strip() for cell in row):
            continue
        width = len(row)
        last, first, born_text, nir, phone, email, address = (
            row[p].strip() if 0 <= p < width else "" for p in positions
        )
        if not last:
            raise RosterError(f"line {line}: empty last name")
        born = _parse_date(born_text, line)
        folded_last = folded_row[last_at] if last_at < len(folded_row) else ""
        folded_first = folded_row[first_at] if first_at < len(folded_row) else ""
        identity = (
            f"{normalise_folded_name(folded_last)}|{normalise_folded_name(folded_first)}|"
            f"{born.isoformat() if born else ''}"
        )
        key = patient_key(pseudonym_key, identity)
        if key in seen:
            continue  # the same patient twice: keep the first row
        seen.add(key)
        patients.append(
            RosterPatient(
                key=key,
                last_name=last,
                first_name=first,
                birth_date=born,
                nir=nir,
                phone=phone,
                email=email,
                address=address,
            )
        )
    return patients


def _serialise(patients: Iterable[RosterPatient]) -> bytes:
    rows = [
        [
            p.key,
            p.last_name,
            p.first_name,
            p.birth_date.isoformat() if p.birth_date else "",
            p.nir,
            p.phone,
            p.email,
            p.address,
        ]
        for p in patients
    ]
    return json.dumps({"version": 1, "patients": rows}, ensure_ascii=False).encode()


def save_roster(data_dir: Path, keyring: Keyring, patients: Iterable[RosterPatient]) -> None:
    """Replace the stored roster atomically and durably."""
    blob = Sealer(keyring).seal(_serialise(patients), _AAD)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / ROSTER_FILE
    tmp = data_dir / (ROSTER_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_roster(data_dir: Path, keyring: Keyring) -> list[RosterPatient]:
    """The imported roster, or [] when none was imported."""
    path = data_dir / ROSTER_FILE
    if not path.exists():
        return []
    from crypto.aead import SealError

    try:
        payload = json.loads(Sealer(keyring).open(path.read_bytes(), _AAD))
    except SealError as exc:
        raise RosterError("roster file does not open with this keyring") from exc
    return [
        RosterPatient(
            key=key,
            last_name=last,
            first_name=first,
            birth_date=date.fromisoformat(born) if born else None,
            nir=nir,
            phone=phone,
            email=email,
            address=address,
        )
        for key, last, first, born, nir, phone, email, address in payload["patients"]
    ]


def import_roster(data_dir: Path, keyring: Keyring, csv_path: Path) -> int:
    """Parse a CSV and replace the stored roster. Returns the number of patients."""
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise RosterError(f"cannot read roster file {csv_path.name}: {exc.strerror}") from exc
    patients = parse_roster_csv(raw, keyring.pseudonym_key)
    save_roster(data_dir, keyring, patients)
    return len(patients)


def find_patient_keys(
    patients: Iterable[RosterPatient],
    name: str,
    birth_date: date | None,
    pseudonym_key: bytes,
    digest_key: bytes | None = None,
) -> set[str]:
    """Keys of "NOM Prénom" (or "Prénom Nom") born on `birth_date`, on the roster or not.

    With `digest_key`, also the key under which the scan engine vaults this name when
    it met it without a roster entry ("n-" + the name's keyed digest)."""
    wanted = normalise_name(name)
    keys = {
        p.key
        for p in patients
        if p.birth_date == birth_date
        and wanted
        in (
            f"{normalise_name(p.last_name)} {normalise_name(p.first_name)}",
            f"{normalise_name(p.first_name)} {normalise_name(p.last_name)}",
        )
    }
    words = wanted.split()
    for cut in range(1, len(words)):  # patients no longer on the roster, still in the vault
        last, first = " ".join(words[:cut]), " ".join(words[cut:])
        keys.add(patient_key(pseudonym_key, normalise_identity(last, first, birth_date)))
    if digest_key is not None and wanted:
        from crypto.pseudonym import value_digest
        from gateway.scan.engine import name_digest_value

        keys.add("n-" + value_digest(digest_key, "name", name_digest_value(wanted)))
    return keys


def forget_patient(data_dir: Path, keyring: Keyring, keys: set[str]) -> tuple[int, int]:
    """Remove patients from the roster and the vault. Returns (roster rows, vault rows)."""
    from gateway.vault import Vault

    patients = load_roster(data_dir, keyring)
    kept = [p for p in patients if p.key not in keys]
    if len(kept) != len(patients):
        save_roster(data_dir, keyring, kept)
    with Vault.open(data_dir, keyring) as vault:
        removed = sum(vault.forget_patient(key) for key in keys)
    return len(patients) - len(kept), removed
