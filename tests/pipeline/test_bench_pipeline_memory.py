"""The memory benchmark runs (on a tiny message); its figures are not checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "load-tests" / "bench_pipeline_memory.py"


@pytest.mark.parametrize("line_chars", ["76", "64"])
def test_benchmark_runs_on_tiny_input(line_chars: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--size-mb", "0.2", "--copies", "2"]
        + ["--line-chars", line_chars],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verdicts: rewritten,rewritten" in result.stdout
    assert "planted name left in output: False" in result.stdout
    assert "peak RSS (VmHWM):" in result.stdout
