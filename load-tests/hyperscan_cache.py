"""How long the scan core's Hyperscan shape pass takes alone, and between other work.

Timed inside the dense loop (bench_scan.py's orders), a dense order's shape scan takes
about twice as long as the same scans back to back. This script separates the causes:
it times the shape database's scan of each dense order (its fields folded and joined, as
`Engine._match_message` scans them) with, before each scan,
- nothing (the database stays in the caches),
- interpreter and library code that touches little data,
- a read of 256 KB and of 1 MB of unrelated memory,
- a whole scan + rewrite of another order (what the dense loop does),
and prints the mean per scan of each, best of --rounds. With `--sizes` it also prints the
database's size, whole and without each shape (Hyperscan compiles some shapes' automata
into each other: dropping one can save far more than its own database would hold).

Usage:
    .venv/bin/python load-tests/hyperscan_cache.py [-n N] [--rounds R] [--sizes] [--quick]
Needs the compiled scan core with its Hyperscan module (`make`); --sizes needs the
python-hyperscan binding (installed with the package), whose databases report a size.
"""

from __future__ import annotations

import argparse
import decimal
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_scan  # noqa: E402

from gateway.scan import TransformPolicy  # noqa: E402
from gateway.scan._fold import fold  # noqa: E402
from gateway.scan.shapes import SHAPES, ShapeName  # noqa: E402

_FIELD_SEPARATOR = b"\0"  # as Engine._match_message joins a message's fields


def code_only() -> None:
    """Some interpreter and library code, little data."""
    json.dumps({"a": [1, 2, 3], "b": "x"})
    re.compile("a+b")
    decimal.Decimal("1.5") * 3
    sorted([3, 1, 2])
    "x".join(["a", "b"])


def database_size(skip: ShapeName | None = None) -> int:
    """The shape database's size (python-hyperscan), without `skip`'s expressions."""
    import hyperscan

    expressions, ids, flags = [], [], []
    for index, shape in enumerate(SHAPES):
        if shape.name is skip:
            continue
        for pattern in (shape.trigger or shape.pattern, *shape.extra_triggers):
            expressions.append(pattern.encode("ascii"))
            ids.append(index)
            caseless = hyperscan.HS_FLAG_CASELESS if shape.caseless else 0
            flags.append(hyperscan.HS_FLAG_SOM_LEFTMOST | caseless)
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=ids, elements=len(expressions), flags=flags)
    return int(database.size())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="dense orders (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="best of (default 3)")
    parser.add_argument("--sizes", action="store_true", help="database sizes per shape")
    parser.add_argument("--quick", action="store_true", help="tiny run (used by a test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 20, 1
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    engine, _ = bench_scan.build(bench_scan.synthetic_roster(10_000), "auto")
    if engine.matcher.name != "hyperscan" or not hasattr(engine.matcher, "_shape_db"):
        sys.exit("the Hyperscan matcher is not available")
    database = engine.matcher._shape_db
    orders = bench_scan.dense_messages(args.n).messages
    datas = [_FIELD_SEPARATOR.join(fold(f.text).encode("ascii") for f in o) for o in orders]
    memory = bytearray(os.urandom(1 << 20))
    policy = TransformPolicy(audience="labo.example")
    others = itertools.cycle(orders)

    def another_order() -> None:
        fields = next(others)
        engine.rewrite_fields(fields, engine.scan_fields(fields), policy)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("nothing", lambda: None),
        ("code touching little data", code_only),
        ("a 256 KB read", lambda: memory[: 256 << 10].count(0)),
        ("a 1 MB read", lambda: memory.count(0)),
        ("another order's scan + rewrite", another_order),
    ]
    print(f"Hyperscan shape pass, {len(datas)} dense orders, mean per scan, best of {args.rounds}")
    clock = time.perf_counter_ns
    for label, before in cases:
        best = float("inf")
        for _ in range(args.rounds):
            total = 0
            for data in datas:
                before()
                started = clock()
                database.scan_grouped(data)
                total += clock() - started
            best = min(best, total / len(datas) / 1000)
        print(f"  before each scan: {label:32s} {best:6.1f} us")
    if args.sizes:
        whole = database_size()
        print(f"shape database: {whole / 1024:.0f} KB; saved without each shape:")
        for shape in SHAPES:
            print(f"  {shape.name.value:16s} {(whole - database_size(shape.name)) / 1024:6.1f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
