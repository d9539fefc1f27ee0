"""Instructions per dense 2 KB lab order in the scan core, counted by valgrind's callgrind.

The figure to compare two versions of gateway/scan with on a VM whose speed drifts (timed
runs move by +-30 % there; instruction counts by well under 1 %). Uses bench_scan.py's
dense orders and synthetic roster: callgrind collects inside `Engine.scan_fields` and
`Engine.rewrite_fields` only (`--toggle-collect` on their compiled entry points), first
over the warm-up orders alone, then over the warm-up and N more; the difference divided
by N is one order's cost, first-call costs (imports, caches filled, phonenumbers'
metadata) left out.

Usage:
    .venv/bin/python load-tests/callgrind_scan.py [-n N] [--warmup W] [--roster R]
        [--code DIR] [--quick]
`--code DIR` measures another checkout (a `git worktree` with its compiled modules built),
with this checkout's interpreter. Needs valgrind (`make test` installs it) and the
compiled scan core (`make`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# callgrind collects while inside these (the compiled modules' Python entry points).
COLLECT = ("CPyPy_engine___Engine___scan_fields", "CPyPy_engine___Engine___rewrite_fields")
_TOTAL = re.compile(r"^([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", re.M)


def harness(code: Path, roster: int, warmup: int, measured: int, generated: int) -> None:
    """Run under callgrind: scan and rewrite the first `warmup` + `measured` of
    `generated` dense orders (both runs generate the same orders)."""
    sys.path[:0] = [str(code), str(code / "load-tests")]
    import bench_scan

    from gateway.scan import TransformPolicy
    from gateway.scan import engine as engine_module

    if not engine_module.__file__ or not engine_module.__file__.endswith(".so"):
        sys.exit(f"{code}: the scan core is not compiled (run make)")
    scan, _ = bench_scan.build(bench_scan.synthetic_roster(roster), "auto")
    orders = bench_scan.dense_messages(generated).messages
    policy = TransformPolicy(audience="labo.example")
    for fields in orders[: warmup + measured]:
        scan.rewrite_fields(fields, scan.scan_fields(fields), policy)


def instructions(code: Path, roster: int, warmup: int, measured: int, generated: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        command += [f"--toggle-collect={name}" for name in COLLECT]
        command += [sys.executable, __file__, "--harness", "--code", str(code)]
        command += ["--roster", str(roster), "--warmup", str(warmup), "-n", str(measured)]
        command += ["--generated", str(generated)]
        subprocess.run(command, check=True, capture_output=True)
        report = subprocess.run(
            ["callgrind_annotate", str(out)], check=True, capture_output=True, text=True
        ).stdout
    total = _TOTAL.search(report)
    if total is None:
        raise SystemExit("callgrind_annotate printed no PROGRAM TOTALS")
    return int(total[1].replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="orders measured (default 200)")
    parser.add_argument("--warmup", type=int, default=100, help="orders first (default 100)")
    parser.add_argument("--roster", type=int, default=10_000, help="patients (default 10,000)")
    parser.add_argument("--code", type=Path, default=HERE.parent, help="checkout measured")
    parser.add_argument("--quick", action="store_true", help="tiny run (used by a test)")
    parser.add_argument("--harness", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generated", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.warmup, args.roster = 4, 2, 100
    code = args.code.resolve()
    if args.harness:
        harness(code, args.roster, args.warmup, args.n, args.generated)
        return 0
    generated = args.warmup + args.n
    warm = instructions(code, args.roster, args.warmup, 0, generated)
    both = instructions(code, args.roster, args.warmup, args.n, generated)
    per_order = (both - warm) / args.n
    print(
        f"callgrind, dense 2 KB orders (scan_fields + rewrite_fields), {code}, "
        f"roster {args.roster}, {args.warmup} warm-up + {args.n} measured"
    )
    print(f"instructions per dense order: {per_order / 1000:,.1f}k")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same set and dict orders each run
    raise SystemExit(main())
