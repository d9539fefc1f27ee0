"""Golden messages: tests/golden/NAME.in.eml -> the lab copy's output.

Expected outputs: NAME.out.eml (the bytes delivered) or NAME.out.txt ("hold: reason").
Fixed keys (tests/pipeline/_helpers.py) make the output deterministic. To regenerate after
a reviewed change: PORTIQUE_REGOLD=1 pytest tests/pipeline/test_golden.py, then read the
diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pipeline._helpers import PLANTED, assert_no_planted, lab_copy, run

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(p.name.removesuffix(".in.eml") for p in GOLDEN.glob("*.in.eml"))
# Values planted in the golden inputs besides the roster's.
EXTRA_PLANTED = ("DOS-4471", "19751102", "06 98 76 54 32", "14/03/1982")


def test_every_handler_has_a_golden_case() -> None:
    formats = {
        "stl",
        "ply",
        "obj",
        "dicom",
        "pdf",
        "docx",
        "xlsx",
        "odt",
        "xml",
        "zip",
        "png",
        "jpeg",
        "rfc822",
        "html",
    }
    covered = {f for f in formats if any(f.replace("xml", "_xml") in c or f in c for c in CASES)}
    assert covered == formats, formats - covered


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    raw = (GOLDEN / f"{name}.in.eml").read_bytes()
    copy = run(raw, lab_copy()).copies[0]
    if copy.verdict in ("hold", "reject"):
        actual = f"{copy.verdict.value}: {copy.reason}\n".encode()
        path = GOLDEN / f"{name}.out.txt"
    else:
        assert copy.data is not None
        actual = copy.data
        path = GOLDEN / f"{name}.out.eml"
        assert_no_planted(actual, PLANTED + EXTRA_PLANTED)
    if os.environ.get("PORTIQUE_REGOLD") == "1":
        path.write_bytes(actual)
    assert path.exists(), f"missing expected output {path.name}"
    assert actual == path.read_bytes()
    # Deterministic: a second run gives the same bytes.
    again = run(raw, lab_copy()).copies[0]
    assert (again.data or f"{again.verdict.value}: {again.reason}\n".encode()) == actual


def test_no_identifier_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    import structlog

    from gateway.verdicts import Action
    from tests.pipeline._helpers import copy_for

    caplog.set_level("DEBUG")
    with structlog.testing.capture_logs() as structured:
        for name in CASES:
            raw = (GOLDEN / f"{name}.in.eml").read_bytes()
            run(raw, lab_copy(), copy_for(Action.REDACT), copy_for(Action.REJECT_IF_PHI))
    lines = [r.getMessage() for r in caplog.records] + [repr(e) for e in structured]
    for line in lines:
        assert_no_planted(line, PLANTED + EXTRA_PLANTED)
