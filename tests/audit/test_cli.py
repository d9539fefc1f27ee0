"""`portique audit export|prune|status|checkpoint` through the real command line."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.cli import main
from gateway.config import AuditConfig

from ._helpers import fill


class SteppingClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def config_file(data_dir: Path, keyring: Keyring) -> Path:
    clock = SteppingClock(datetime(2026, 4, 1, tzinfo=UTC))
    with AuditTrail.open(
        data_dir, keyring, AuditConfig(checkpoint_every=4, retention_days=0), clock=clock
    ) as trail:
        for _ in range(10):
            fill(trail, 1)
            clock.now += timedelta(days=1)
    path = data_dir.parent / "portique.toml"
    path.write_text(f'data_dir = "{data_dir}"\n[audit]\nretention_days = 0\n')
    return path


def test_export_jsonl_between_dates(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "incident.jsonl"
    code = main(
        [
            "audit",
            "export",
            "-c",
            str(config_file),
            "--since",
            "2026-04-03",
            "--until",
            "2026-04-06",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [3, 4, 5]
    assert rows[0]["ts"].startswith("2026-04-03T")
    assert rows[0]["kind"] == "decided"
    assert set(rows[0]) == {"seq", "ts", "kind", "actor", "fields", "prev_hash", "hash"}
    assert rows[1]["prev_hash"] == rows[0]["hash"]


def test_export_csv(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "incident.csv"
    assert (
        main(["audit", "export", "-c", str(config_file), "--format", "csv", "--out", str(out)]) == 0
    )
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    assert [row["seq"] for row in rows] == [str(n) for n in range(1, 11)]
    assert {row["route"] for row in rows} == {"mssante"}
    assert rows[0]["action"] == "pass" and rows[0]["outcome"] == "pass"
    assert rows[1]["message_id"] == "<m0@cabinet.test>"
    assert json.loads(rows[0]["findings"]) == {"name": 1, "nir": 0}


def test_export_rejects_a_bad_date(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "-c", str(config_file), "--since", "yesterday"]) == 2
    assert "not an ISO date" in capsys.readouterr().err


def test_prune_then_verify(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "before.jsonl"
    assert (
        main(["audit", "export-checkpoints", "-c", str(config_file), "--out", str(exported)]) == 0
    )
    assert main(["audit", "prune", "-c", str(config_file), "--before", "2026-04-05"]) == 0
    assert "4 records pruned" in capsys.readouterr().out
    assert main(["audit", "verify", "-c", str(config_file)]) == 0
    # Checkpoints exported before the prune still check the records that remain.
    assert main(["audit", "verify", "-c", str(config_file), "--against", str(exported)]) == 0
    assert main(["audit", "status", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "pruned through 4" in out


def test_checkpoint_command_signs_the_head(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "checkpoint", "-c", str(config_file)]) == 0
    assert "checkpoint signed at record 10" in capsys.readouterr().out


def test_verify_without_a_trail_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from crypto.keys import init_keys

    empty = tmp_path / "empty"
    empty.mkdir()
    init_keys(empty)
    config = tmp_path / "empty.toml"
    config.write_text(f'data_dir = "{empty}"\n')
    assert main(["audit", "verify", "-c", str(config)]) == 2
    assert "no audit trail" in capsys.readouterr().err


def test_export_of_a_damaged_record_is_a_clear_error(
    config_file: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ._helpers import raw_db

    with raw_db(data_dir) as db:
        db.execute("UPDATE records SET fields = '{not json' WHERE seq = 3")
    assert main(["audit", "export", "-c", str(config_file)]) == 2
    assert "record 3 is unreadable" in capsys.readouterr().err
    assert main(["audit", "verify", "-c", str(config_file)]) == 1
