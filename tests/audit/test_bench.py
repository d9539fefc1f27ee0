"""The audit benchmark runs (on tiny input); its figures are for the README, not a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "load-tests" / "bench_audit.py"


def test_bench_audit_runs_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for row in ("append", "verify", "search", "status", "metrics", "message events"):
        assert any(line.startswith(row) for line in done.stdout.splitlines()), row
