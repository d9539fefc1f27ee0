"""Running the load-test shell scripts from tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load-tests"


def run_script(workdir: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run load-tests/SCRIPT with TMPDIR=workdir (bounded: 240 s)."""
    return subprocess.run(
        ["bash", str(LOAD_TESTS / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(workdir)},
    )
