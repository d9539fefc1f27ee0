"""Load-test helpers live in load-tests/ (not a package: it holds scripts); make them importable."""

from __future__ import annotations

import sys
from pathlib import Path

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load-tests"
if str(LOAD_TESTS) not in sys.path:
    sys.path.insert(0, str(LOAD_TESTS))
