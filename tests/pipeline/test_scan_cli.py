"""`portique scan` on real files: .eml through the pipeline, bare files as attachments."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from crypto.keys import init_keys
from gateway.cli import main

ROSTER = "nom;prenom;date_naissance\nDUPONT;Jean;02/11/1975\n"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    init_keys(tmp_path / "portique-data")  # the default data_dir: stable tokens
    (tmp_path / "roster.csv").write_text(ROSTER)
    return tmp_path


def test_single_text_file_goes_to_stdout(
    workdir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    (workdir / "note.txt").write_text("Patient DUPONT Jean, tel 06 12 34 56 78\n")
    assert main(["scan", "--roster", "roster.csv", "note.txt"]) == 0
    out = capsysbinary.readouterr().out
    assert b"DUPONT" not in out and b"06 12 34 56 78" not in out
    assert out.startswith(b"Patient PAT-")


def test_folder_with_out_dir_and_report(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = workdir / "cases"
    cases.mkdir()
    stl = b"DUPONT Jean".ljust(80, b" ") + struct.pack("<I", 1) + bytes(range(50))
    (cases / "DUPONT_Jean.stl").write_bytes(stl)
    golden = Path(__file__).resolve().parent.parent / "golden"
    (cases / "order.eml").write_bytes((golden / "01_text_html.in.eml").read_bytes())
    status = main(
        [
            "scan",
            "--roster",
            "roster.csv",
            "--out",
            "out",
            "--report",
            "r.json",
            "--recipient",
            "x@labo.fr",
            "cases",
        ]
    )
    assert status == 0
    out = workdir / "out"
    rewritten = (out / "DUPONT_Jean.stl").read_bytes()
    assert rewritten[80:] == stl[80:] and b"DUPONT" not in rewritten
    assert b"DUPONT" not in (out / "order.eml").read_bytes()
    report = json.loads((workdir / "r.json").read_text())
    assert [f["verdict"] for f in report["files"]] == ["rewritten", "rewritten"]
    for entry in report["files"]:  # the path is the operator's own; the rest has no value
        assert "DUPONT" not in json.dumps({k: v for k, v in entry.items() if k != "path"})
        assert entry["findings"] and {"kind", "start", "end", "digest"} <= set(entry["findings"][0])
    # Tokens are stable across runs with the data_dir keyring.
    main(["scan", "--roster", "roster.csv", "--out", "out2", "--recipient", "x@labo.fr", "cases"])
    assert (workdir / "out2" / "DUPONT_Jean.stl").read_bytes() == rewritten
    capsys.readouterr()


def test_held_file_is_not_written_and_exit_status_is_1(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.files._docs import text_pdf

    (workdir / "fiche.pdf").write_bytes(text_pdf("Patient DUPONT Jean"))
    assert main(["scan", "--roster", "roster.csv", "--out", "out", "fiche.pdf"]) == 1
    assert not (workdir / "out" / "fiche.pdf").exists()
    err = capsys.readouterr().err
    assert "hold" in err and "DUPONT" not in err
