"""Load-test helpers live in load-tests/ (not a package: it holds scripts); make them importable."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load-tests"
if str(LOAD_TESTS) not in sys.path:
    sys.path.insert(0, str(LOAD_TESTS))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A TMPDIR for the load-test scripts. Not pytest's tmp_path: that is 0700, and the
    postfix and nobody users (smtp-sink) must reach it."""
    d = Path(tempfile.mkdtemp(prefix="load-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
