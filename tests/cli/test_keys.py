"""Key rotation through the CLI: new keys take over, old data still opens, each rotation is audited."""

from __future__ import annotations

from pathlib import Path

from crypto.aead import Sealer
from crypto.keys import load_keys
from gateway.audit import AuditTrail
from gateway.cli import main
from gateway.config import AuditConfig


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "portique.toml"
    cfg.write_text('data_dir = "data"\n')
    return cfg


def test_rotations_are_audited_and_old_data_still_opens(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    data_dir = tmp_path / "data"
    assert main(["keys", "init", "-c", str(cfg)]) == 0
    before = load_keys(data_dir)
    blob = Sealer(before).seal(b"spooled message", b"spool:1")

    assert main(["keys", "rotate-data", "-c", str(cfg)]) == 0
    assert main(["keys", "rotate-pseudonym", "--yes-break-lab-linkage", "-c", str(cfg)]) == 0

    after = load_keys(data_dir)
    assert after.current_data_version == before.current_data_version + 1
    assert after.pseudonym_key != before.pseudonym_key
    assert Sealer(after).open(blob, b"spool:1") == b"spooled message"

    trail = AuditTrail.open_readonly(data_dir, after, AuditConfig())
    records, total = trail.search(kind="key_rotation")
    assert total == 2
    assert sorted(r.fields["key"] for r in records) == ["data", "pseudonym"]
    assert trail.verify().ok
