"""compare_postfix.sh on a tiny run: a private Postfix relay and Portique each deliver a
few smtp-source messages into smtp-sink, the table is printed, and nothing is left behind.

Needs root (Postfix's master runs as root) and Debian's postfix; `make test` installs it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.load._scripts import run_script

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        not (
            os.access("/usr/sbin/smtp-source", os.X_OK) and os.access("/usr/sbin/postfix", os.X_OK)
        ),
        reason="Debian postfix not installed (make test installs it)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]

ROW = re.compile(
    r"^\| (?P<label>[^|]+?) +\| +(?P<delivered>\d+) \| +(?P<secs>[\d.]+) \| +(?P<rate>[\d.]+) \|(?P<note>.*)$",
    re.M,
)


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_script(workdir, "compare_postfix.sh", *args)


def rows(stdout: str) -> dict[str, dict[str, str]]:
    return {m["label"].strip(): m.groupdict() for m in ROW.finditer(stdout)}


def no_private_postfix_left(workdir: Path) -> bool:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return str(workdir) not in ps


def test_postfix_row(workdir: Path) -> None:
    out = run(workdir, "--rows", "postfix", "-m", "30", "-s", "3", "--no-verify")
    assert out.returncode == 0, out.stdout + out.stderr
    table = rows(out.stdout)
    (label,) = table
    assert label.startswith("Postfix") and "plain relay" in label
    assert table[label]["delivered"] == "30" and float(table[label]["rate"]) > 0
    assert "nproc=" in out.stdout
    assert list(workdir.iterdir()) == []  # temp dir removed
    # smtp-sink's dump went to tmpfs, and is removed too.
    sink_dir = re.search(r"smtp-sink dumps in (\S+)", out.stderr)
    assert sink_dir is not None and sink_dir[1].startswith("/dev/shm/"), out.stderr
    assert not Path(sink_dir[1]).exists()
    assert no_private_postfix_left(workdir)


def test_portique_deliver_row_with_verification(workdir: Path) -> None:
    out = run(workdir, "--rows", "deliver", "-m", "20", "-s", "3", "--verify-messages", "10")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    table = rows(out.stdout)
    assert table["Portique, deliver route (scanned, not rewritten)"]["delivered"] == "20"
    assert "arrived 10  missing 0" in out.stderr  # the driver's verification run
    # The latency run: the harness's own maximum measured first, then half the lower one.
    assert re.search(
        r"deliver: maximum sustained: [\d.]+ msg/s under smtp-source, [1-9][\d.]* msg/s with",
        out.stderr,
    )
    latency = re.search(
        r"Portique deliver, 2 KB at half the maximum sustained rate: offered_rate=[\d.]+/s "
        r"latency end of DATA -> sink ms: p50 [\d.]+ .* p99 [\d.]+ .*RESULT: OK",
        out.stdout,
    )
    assert latency is not None, out.stdout
    assert list(workdir.iterdir()) == []


def test_pseudonymising_row_through_serve(workdir: Path) -> None:
    """`portique serve` with its scan engine: every lab copy reaches smtp-sink, the row
    counts them all, and the driver's verification finds no planted name, NIR, phone or
    e-mail."""
    out = run(
        workdir, "--rows", "pseudonymise", "-m", "20", "-s", "3",
        "--verify-messages", "10", "--latency-seconds", "0", "--settle", "20",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    row = rows(out.stdout)["Portique, pseudonymising lab route"]
    assert row["delivered"] == "20" and "INCOMPLETE" not in row["note"]
    assert "arrived 10  missing 0" in out.stderr and "RESULT: OK" in out.stderr
    assert "planted values found at the sink" not in out.stderr
    # How busy the machine was, and each worker process's CPU (workers = "auto").
    busy = re.search(
        r"portique-pseudonymise: the machine was busy ([\d.]+) of (\d+) cores", out.stderr
    )
    assert busy is not None and 0 < float(busy.group(1)) <= int(busy.group(2)), out.stderr
    workers = re.search(
        r"portique-pseudonymise: CPU per worker process:((?: [\d.]+ s)+)", out.stderr
    )
    assert workers is not None and len(workers.group(1).split(" s")) - 1 == os.cpu_count()
    assert list(workdir.iterdir()) == []


def test_two_instances_split_the_load_and_every_message_is_delivered(workdir: Path) -> None:
    out = run(
        workdir, "--rows", "deliver", "--instances", "2", "-m", "21", "-s", "4", "--no-verify"
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    row = rows(out.stdout)["Portique, deliver route (scanned, not rewritten), 2 processes"]
    assert row["delivered"] == "21"
    assert no_private_postfix_left(workdir) and list(workdir.iterdir()) == []


def test_python_floor_row_relays_every_message(workdir: Path) -> None:
    """The reference row: load-tests/python_floor.py (two processes sharing the port)
    relays every smtp-source message to smtp-sink, and nothing is left running."""
    out = run(workdir, "--rows", "floor", "--workers", "2", "-m", "25", "-s", "4", "--no-verify")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    row = rows(out.stdout)["Python floor: minimal relay, fsync, no gateway work (2 proc.)"]
    assert row["delivered"] == "25" and "INCOMPLETE" not in row["note"]
    assert float(row["rate"]) > 0
    assert list(workdir.iterdir()) == []


def test_rounds_print_each_ratio_and_their_spread(workdir: Path) -> None:
    """compare_rounds.sh: Postfix's and Portique's rows alternated per round, each
    round's ratio the quotient of its two rates, and a summary that matches them."""
    out = run_script(workdir, "compare_rounds.sh", "-r", "2", "-m", "20", "-s", "3")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rounds = re.findall(
        r"^round \d: Postfix ([\d.]+) msg/s, Portique ([\d.]+) msg/s, ratio ([\d.]+)$",
        out.stdout,
        re.M,
    )
    assert len(rounds) == 2, out.stdout
    ratios = sorted(float(r) for _, _, r in rounds)
    for postfix, portique, ratio in rounds:
        assert abs(float(portique) / float(postfix) - float(ratio)) <= 0.01
    summary = re.search(
        r"ratio over 2 rounds: min ([\d.]+), median ([\d.]+), max ([\d.]+); (\d) of 2 at 1.0",
        out.stdout,
    )
    assert summary is not None, out.stdout
    assert float(summary[1]) == ratios[0] and float(summary[3]) == ratios[1]
    assert abs(float(summary[2]) - sum(ratios) / 2) <= 0.006
    assert int(summary[4]) == sum(r >= 1.0 for r in ratios)
    assert list(workdir.iterdir()) == []
    assert no_private_postfix_left(workdir)
