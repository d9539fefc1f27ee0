"""Running the load-test shell scripts from tests."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load-tests"


def run_script(workdir: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run load-tests/SCRIPT with TMPDIR=workdir (bounded: 240 s); fails if a process it
    started (one whose command line names its work folder) is still running after it."""
    done = subprocess.run(
        ["bash", str(LOAD_TESTS / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(workdir)},
    )
    deadline = time.monotonic() + 5
    while (left := processes_naming(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"{script} left processes running: {left}"
    return done


def processes_naming(path: Path) -> list[int]:
    """PIDs of the processes whose command line contains `path`."""
    needle = str(path).encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # ended meanwhile
    return found
