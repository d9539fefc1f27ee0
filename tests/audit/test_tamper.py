"""`portique audit verify` catches every kind of tampering, naming the first bad record.

Each test builds a real trail (SQLite file, Ed25519 checkpoints), then edits the file
with plain sqlite3 as someone with disk access would (guards dropped), then runs the
real command line and checks its exit status and the record it names.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from crypto.keys import Keyring
from crypto.signing import record_mac, record_mac_key, sign_payload
from gateway.audit import AuditTrail
from gateway.audit.trail import record_hash
from gateway.cli import main
from gateway.config import AuditConfig

from ._helpers import make_trail, raw_db

N_RECORDS = 23  # checkpoints at 5, 10, 15, 20 and a closing one at 23
EVERY = 5


@pytest.fixture
def config_file(data_dir: Path) -> Path:
    path = data_dir.parent / "portique.toml"
    path.write_text(f'data_dir = "{data_dir}"\n[audit]\ncheckpoint_every = {EVERY}\n')
    return path


@pytest.fixture
def trail_dir(data_dir: Path, keyring: Keyring) -> Path:
    make_trail(data_dir, keyring, N_RECORDS, every=EVERY)
    return data_dir


def run_verify(
    config_file: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", "-c", str(config_file), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_untouched_trail_verifies(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_verify(config_file, capsys)
    assert code == 0, out
    assert f"{N_RECORDS} records" in out
    assert "last checkpoint at record 23" in out


def test_edited_field_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_db(trail_dir) as db:
        (fields,) = db.execute("SELECT fields FROM records WHERE seq = 7").fetchone()
        edited = json.loads(fields)
        edited["route"] = "relay"
        db.execute("UPDATE records SET fields = ? WHERE seq = 7", (json.dumps(edited),))
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 7" in out
    assert "modified" in out


def test_edited_field_with_recomputed_hash_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recomputing the SHA-256 is not enough: the MAC needs a key the attacker lacks."""
    with raw_db(trail_dir) as db:
        seq, ts, kind, actor, fields, prev = db.execute(
            "SELECT seq, ts, kind, actor, fields, prev_hash FROM records WHERE seq = 12"
        ).fetchone()
        edited = json.loads(fields)
        edited["findings"] = {}
        new_hash = record_hash(seq, ts, kind, actor, edited, prev)
        db.execute(
            "UPDATE records SET fields = ?, hash = ? WHERE seq = 12",
            (json.dumps(edited), new_hash),
        )
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 12" in out


def test_deleted_row_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_db(trail_dir) as db:
        db.execute("DELETE FROM records WHERE seq = 9")
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 9" in out
    assert "missing" in out


def test_deleted_row_with_renumbering_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_db(trail_dir) as db:
        db.execute("DELETE FROM records WHERE seq = 9")
        for seq in range(10, N_RECORDS + 1):
            db.execute("UPDATE records SET seq = ? WHERE seq = ?", (seq - 1, seq))
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 9" in out


def test_inserted_row_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged record at 14, correctly chained and hashed, later records shifted up."""
    with raw_db(trail_dir) as db:
        for seq in range(N_RECORDS, 13, -1):
            db.execute("UPDATE records SET seq = ? WHERE seq = ?", (seq + 1, seq))
        (prev,) = db.execute("SELECT hash FROM records WHERE seq = 13").fetchone()
        fields = {"route": "mssante", "action": "pass", "verdict": "pass"}
        ts = "2026-01-01T00:00:00.000000Z"
        digest = record_hash(14, ts, "decided", "system", fields, prev)
        db.execute(
            "INSERT INTO records (seq, ts, kind, actor, fields, prev_hash, hash, mac)"
            " VALUES (14, ?, 'decided', 'system', ?, ?, ?, ?)",
            (ts, json.dumps(fields), prev, digest, "0" * 64),
        )
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 14" in out


def test_appended_forgery_after_last_checkpoint_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the last checkpoint only the MAC protects records: a forged, correctly
    chained record at the end is still caught."""
    with raw_db(trail_dir) as db:
        (prev,) = db.execute("SELECT hash FROM records WHERE seq = ?", (N_RECORDS,)).fetchone()
        seq = N_RECORDS + 1
        ts = "2026-01-01T00:00:00.000000Z"
        digest = record_hash(seq, ts, "received", "system", {}, prev)
        db.execute(
            "INSERT INTO records (seq, ts, kind, actor, fields, prev_hash, hash, mac)"
            " VALUES (?, ?, 'received', 'system', '{}', ?, ?, ?)",
            (seq, ts, prev, digest, "ab" * 32),
        )
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert f"first bad record: {N_RECORDS + 1}" in out


def test_swapped_rows_are_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_db(trail_dir) as db:
        db.execute("UPDATE records SET seq = -1 WHERE seq = 16")
        db.execute("UPDATE records SET seq = 16 WHERE seq = 17")
        db.execute("UPDATE records SET seq = 17 WHERE seq = -1")
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 16" in out


def test_truncated_tail_before_last_checkpoint_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_db(trail_dir) as db:
        db.execute("DELETE FROM records WHERE seq > 18")
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 19" in out
    assert "truncated" in out


def test_truncation_with_checkpoints_removed_is_caught_against_export(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    exported = tmp_path / "checkpoints.jsonl"
    assert (
        main(["audit", "export-checkpoints", "-c", str(config_file), "--out", str(exported)]) == 0
    )
    with raw_db(trail_dir) as db:
        db.execute("DELETE FROM records WHERE seq > 15")
        db.execute("DELETE FROM checkpoints WHERE seq > 15")
    code, out = run_verify(config_file, capsys)
    assert code == 0, "without the exported file this truncation is invisible locally"
    code, out = run_verify(config_file, capsys, "--against", str(exported))
    assert code == 1
    assert "first bad record: 16" in out


def test_rewrite_resigned_with_local_keys_is_caught_against_export(
    trail_dir: Path,
    config_file: Path,
    keyring: Keyring,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """An attacker holding the gateway's keys rewrites record 8, re-chains, re-MACs
    and re-signs every checkpoint: only the checkpoints kept off the box catch it."""
    exported = tmp_path / "checkpoints.jsonl"
    assert (
        main(["audit", "export-checkpoints", "-c", str(config_file), "--out", str(exported)]) == 0
    )
    mac_key = record_mac_key(keyring.digest_key)
    with raw_db(trail_dir) as db:
        rows = db.execute(
            "SELECT seq, ts, kind, actor, fields FROM records ORDER BY seq"
        ).fetchall()
        prev = "0" * 64
        hashes = {}
        for seq, ts, kind, actor, fields_json in rows:
            fields = json.loads(fields_json)
            if seq == 8:
                fields["route"] = "relay"
            digest = record_hash(seq, ts, kind, actor, fields, prev)
            db.execute(
                "UPDATE records SET fields = ?, prev_hash = ?, hash = ?, mac = ? WHERE seq = ?",
                (json.dumps(fields), prev, digest, record_mac(mac_key, digest), seq),
            )
            hashes[seq] = digest
            prev = digest
        for row_id, payload in db.execute("SELECT id, payload FROM checkpoints").fetchall():
            data = json.loads(payload)
            data["hash"] = hashes[data["seq"]]
            db.execute(
                "UPDATE checkpoints SET payload = ?, signature = ? WHERE id = ?",
                (json.dumps(data), sign_payload(keyring.audit_signing_key, data), row_id),
            )
    code, out = run_verify(config_file, capsys)
    assert code == 0, "re-signed locally, the trail is self-consistent"
    code, out = run_verify(config_file, capsys, "--against", str(exported))
    assert code == 1
    assert "first bad record: 6" in out  # after the exported checkpoint at 5, up to 10
    assert "records 6..10 were rewritten" in out


def test_checkpoint_with_forged_signature_is_named(
    trail_dir: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_db(trail_dir) as db:
        (row_id, payload) = db.execute(
            "SELECT id, payload FROM checkpoints WHERE seq = 10"
        ).fetchone()
        data = json.loads(payload)
        data["ts"] = "2020-01-01T00:00:00.000000Z"
        db.execute("UPDATE checkpoints SET payload = ? WHERE id = ?", (json.dumps(data), row_id))
    code, out = run_verify(config_file, capsys)
    assert code == 1
    assert "first bad record: 10" in out
    assert "signature" in out


def test_exported_file_from_another_gateway_is_refused(
    trail_dir: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from crypto.keys import init_keys, load_keys

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    init_keys(other_dir)
    other = load_keys(other_dir)
    make_trail(other_dir, other, 6, every=EVERY)
    exported = tmp_path / "other.jsonl"
    with AuditTrail.open_readonly(other_dir, other, AuditConfig()) as trail:
        trail.export_checkpoints(exported)
    code, out = run_verify(config_file, capsys, "--against", str(exported))
    assert code == 1
    assert "signature does not verify" in out


def test_the_gateway_itself_cannot_update_or_delete_records(
    trail_dir: Path, keyring: Keyring
) -> None:
    """The append-only guards hold for any connection that has not dropped them."""
    conn = sqlite3.connect(trail_dir / "audit.sqlite", isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE records SET actor = 'x' WHERE seq = 3")
        with pytest.raises(sqlite3.DatabaseError, match="pruning"):
            conn.execute("DELETE FROM records WHERE seq = 3")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM checkpoints")
    finally:
        conn.close()
    with AuditTrail.open_readonly(trail_dir, keyring, AuditConfig()) as trail:
        assert trail.verify().ok


def test_installed_command_exits_non_zero_after_tampering(
    trail_dir: Path, config_file: Path
) -> None:
    """The `portique` script itself, as an operator or a cron job runs it."""
    import subprocess
    import sys

    portique = Path(sys.executable).parent / "portique"
    ok = subprocess.run(
        [str(portique), "audit", "verify", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    with raw_db(trail_dir) as db:
        db.execute("DELETE FROM records WHERE seq = 4")
    bad = subprocess.run(
        [str(portique), "audit", "verify", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "first bad record: 4" in bad.stderr
