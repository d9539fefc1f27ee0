"""The scan benchmark runs end to end on tiny input (figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "load-tests" / "bench_scan.py"


def test_bench_scan_quick_prints_every_row() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for row in ("us/msg", "MB/s", "roster scaling, dense", "roster import", "presidio"):
        assert row in done.stdout
