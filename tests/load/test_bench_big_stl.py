"""load-tests/bench_big_stl.sh runs end to end on a small mesh: the message reaches
Postfix's smtp-sink through a pseudonymising `portique serve` without the patient's
name, and the script prints the gateway's peak RSS (the 137 MB figure is the benchmark's
own run, not a test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "load-tests" / "bench_big_stl.sh"


def test_big_stl_benchmark_runs_and_reports_peak_rss() -> None:
    # Not pytest's tmp_path: that is 0700, and smtp-sink writes as the nobody user.
    tmp_path = Path(tempfile.mkdtemp(prefix="big-stl-test-", dir="/tmp"))
    tmp_path.chmod(0o755)
    try:
        out = subprocess.run(
            ["bash", str(SCRIPT), "3"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        left = list(tmp_path.iterdir())
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "patient name at the sink: 0" in out.stdout
    peak = re.search(r"gateway peak RSS \(VmHWM\): (\d+) MiB", out.stdout)
    assert peak is not None and 20 < int(peak.group(1)) < 1024
    assert left == []  # its work folder is removed
