"""load-tests/bench_big_stl.sh runs end to end on a small mesh: the message reaches
Postfix's smtp-sink through a pseudonymising `portique serve` without the patient's
name, and the script prints the gateway's peak RSS (the 137 MB figure is the benchmark's
own run, not a test)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.load._scripts import run_script


def test_big_stl_benchmark_runs_and_reports_peak_rss(workdir: Path) -> None:
    out = run_script(workdir, "bench_big_stl.sh", "3")
    left = list(workdir.iterdir())
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "patient name at the sink: 0" in out.stdout
    peak = re.search(r"gateway peak RSS \(VmHWM\): (\d+) MiB", out.stdout)
    assert peak is not None and 20 < int(peak.group(1)) < 1024
    assert left == []  # its work folder is removed
