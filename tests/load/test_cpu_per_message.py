"""load-tests/cpu_per_message.sh runs on a few messages: smtp-source through a
pseudonymising `portique serve` into smtp-sink, every message arriving, and it prints
the rate and the gateway's CPU per message (the 2,000-message figures are the
benchmark's own runs, not a test)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.load._scripts import run_script


def test_cpu_per_message_benchmark_runs_and_reports(workdir: Path) -> None:
    out = run_script(workdir, "cpu_per_message.sh", "-m", "40", "-s", "4")
    left = list(workdir.iterdir())
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    figures = re.search(
        r"40 messages in [\d.]+ s = ([\d.]+) msg/s; gateway CPU [\d.]+ s = ([\d.]+) ms per "
        r"message \(user ([\d.]+), system ([\d.]+)\)",
        out.stdout,
    )
    assert figures is not None, out.stdout
    assert float(figures.group(1)) > 0 and float(figures.group(2)) > 0
    # The split adds up to the total (each rounded to 0.01 ms).
    split = float(figures.group(3)) + float(figures.group(4))
    assert abs(split - float(figures.group(2))) <= 0.02
    assert left == []  # its work folder is removed
