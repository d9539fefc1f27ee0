"""Peak memory of the pipeline on one large STL message (issue 4, "Memory").

    .venv/bin/python load-tests/bench_pipeline_memory.py [--size-mb 50] [--copies 1]
        [--line-chars 76]

Builds a message of --size-mb MB carrying one binary STL attachment (patient name in the
80-byte header and in the file name, base64 like every mailer sends it) in a child process and
spools it to a temporary file. A fresh measuring process then loads the engine, reads the
message (as the service reads it from the spool) and runs `process_message` with one
pseudonymising copy per --copies. It prints RSS before the message, after reading it,
and the peak (VmHWM), and compares the pipeline's share with the target for the whole
gateway path: 4 x message size + 100 MB.

--line-chars 76 (what mailers write) lets the pipeline read the STL by its head and splice
its base64 lines; any other length (64, say) measures the whole-body path.
"""

from __future__ import annotations

import argparse
import base64
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def build(path: Path, size_mb: float, line_chars: int = 76) -> None:
    # --size-mb is the message size: base64 in 76-character CRLF lines turns 57 bytes
    # into 78, so the STL is 57/78 of it.
    facets = max(1, int(size_mb * MB * 57 / 78) // 50)
    header = b"Scan DUPONT Jean 2024-11-02".ljust(80, b" ")
    rng = os.urandom
    body = bytearray(struct.pack("<I", facets))
    chunk = 50 * 4096
    remaining = facets * 50
    while remaining > 0:
        body += rng(min(chunk, remaining))
        remaining -= chunk
    stl = header + bytes(body)
    if line_chars == 76:
        encoded = base64.encodebytes(stl).replace(b"\n", b"\r\n")
    else:
        flat = base64.b64encode(stl)
        lines = [flat[i : i + line_chars] for i in range(0, len(flat), line_chars)]
        encoded = b"\r\n".join(lines) + b"\r\n"
        del flat, lines
    head = (
        b"From: Dr Martin <cabinet@cabinet-martin.fr>\r\nTo: Labo <orders@labo.fr>\r\n"
        b"Subject: Scan DUPONT Jean\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=bench\r\n\r\n"
        b"--bench\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Bonjour, le scan de DUPONT Jean (dent 36).\r\n"
        b"--bench\r\nContent-Type: model/stl\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="DUPONT_Jean_2024-11-02.stl"\r\n\r\n'
    )
    path.write_bytes(head + encoded + b"--bench--\r\n")


def measure(path: Path, copies: int) -> None:
    sys.path.insert(0, str(ROOT))
    from datetime import date

    from gateway.pipeline import RouteCopy, process_message
    from gateway.scan import RosterPatient, build_engine
    from gateway.verdicts import Action

    engine = build_engine(
        patients=[RosterPatient("p1", "DUPONT", "Jean", date(1975, 11, 2))],
        digest_key=b"D" * 32,
        pseudonym_key=b"P" * 32,
    )
    route_copies = [
        RouteCopy(f"lab{i}", Action.PSEUDONYMISE, "relay", (f"o@lab{i}.fr",), f"lab{i}.fr")
        for i in range(copies)
    ]
    before = rss_kb("VmRSS")
    raw = path.read_bytes()
    after_read = rss_kb("VmRSS")
    started = time.perf_counter()
    outcome = process_message(raw, route_copies, engine)
    elapsed = time.perf_counter() - started
    peak = rss_kb("VmHWM")
    verdicts = ",".join(c.verdict.value for c in outcome.copies)
    leaked = any(c.data is not None and b"DUPONT" in c.data for c in outcome.copies)
    size = len(raw) / MB
    share = (peak - before) / 1024
    target = 4 * size + 100
    print(f"message: {size:.1f} MB ({path.stat().st_size} bytes), copies: {copies}")
    print(f"verdicts: {verdicts}; planted name left in output: {leaked}")
    print(
        f"RSS before message: {before / 1024:.1f} MB; after reading it: {after_read / 1024:.1f} MB"
    )
    print(f"peak RSS (VmHWM): {peak / 1024:.1f} MB; pipeline share (peak - before): {share:.1f} MB")
    print(f"target for the whole gateway path (4 x size + 100 MB): {target:.1f} MB")
    print(f"pipeline share / target: {share / target:.2f}; processing time: {elapsed:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--line-chars", type=int, default=76, help="base64 line length")
    parser.add_argument("--measure", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure), args.copies)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "message.eml"
        build(path, args.size_mb, args.line_chars)
        cmd = [sys.executable, __file__, "--measure", str(path), "--copies", str(args.copies)]
        return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
