"""load-tests/cpu_per_message.sh runs on a few messages: smtp-source through a
pseudonymising `portique serve` into smtp-sink, every message arriving, and it prints
the rate and the gateway's CPU per message (the 2,000-message figures are the
benchmark's own runs, not a test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "load-tests" / "cpu_per_message.sh"


def test_cpu_per_message_benchmark_runs_and_reports() -> None:
    # Not pytest's tmp_path: that is 0700, and smtp-sink runs as the nobody user.
    work = Path(tempfile.mkdtemp(prefix="cpu-test-", dir="/tmp"))
    work.chmod(0o755)
    try:
        out = subprocess.run(
            ["bash", str(SCRIPT), "-m", "40", "-s", "4"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "TMPDIR": str(work)},
        )
        left = list(work.iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    figures = re.search(
        r"40 messages in [\d.]+ s = ([\d.]+) msg/s; gateway CPU [\d.]+ s = ([\d.]+) ms",
        out.stdout,
    )
    assert figures is not None, out.stdout
    assert float(figures.group(1)) > 0 and float(figures.group(2)) > 0
    assert left == []  # its work folder is removed
