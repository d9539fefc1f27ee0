"""load-tests/cpu_per_message.sh runs on a few messages: smtp-source through a
pseudonymising `portique serve` into smtp-sink, every message arriving, and it prints
the rate and the gateway's CPU per message (the 2,000-message figures are the
benchmark's own runs, not a test)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.load._scripts import run_script


def test_cpu_per_message_benchmark_runs_and_reports(workdir: Path) -> None:
    out = run_script(workdir, "cpu_per_message.sh", "-m", "40", "-s", "4", "--threads")
    left = list(workdir.iterdir())
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    figures = re.search(
        r"40 messages in [\d.]+ s = ([\d.]+) msg/s; gateway CPU [\d.]+ s = ([\d.]+) ms per "
        r"message \(user ([\d.]+), system ([\d.]+)\)",
        out.stdout,
    )
    assert figures is not None, out.stdout
    assert float(figures.group(1)) > 0 and float(figures.group(2)) > 0
    # The split adds up to the total (each rounded to 0.01 ms).
    split = float(figures.group(3)) + float(figures.group(4))
    assert abs(split - float(figures.group(2))) <= 0.02
    # --threads: the CPU of the gateway's live threads, by name: part of the total (which
    # also counts threads that have ended), in 10 ms clock ticks per thread.
    threads = dict(
        (name, float(ms))
        for name, ms in re.findall(r"thread (.+?) +([\d.]+) ms per message", out.stdout)
    )
    assert {"main (event loop)", "audit-writer", "spool-sync"} <= threads.keys(), out.stdout
    tick = 1000 * 0.01 / 40  # ms per message
    assert 0 < sum(threads.values()) <= float(figures.group(2)) + tick * len(threads)
    assert left == []  # its work folder is removed


def test_pipeline_cpu_is_timed_inside_the_gateway(workdir: Path) -> None:
    """--pipeline-cpu: every message went through the wrapped process_message once, and
    its CPU per call is part of (so at most) the gateway's CPU per message."""
    out = run_script(workdir, "cpu_per_message.sh", "-m", "30", "-s", "3", "--pipeline-cpu")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    total = re.search(r"gateway CPU [\d.]+ s = ([\d.]+) ms per message", out.stdout)
    pipeline = re.search(
        r"pipeline \(process_message\) in the gateway: (\d+) calls, ([\d.]+) ms of CPU per call",
        out.stdout,
    )
    assert total is not None and pipeline is not None, out.stdout
    assert pipeline.group(1) == "30"
    assert 0 < float(pipeline.group(2)) <= float(total.group(1))
    assert list(workdir.iterdir()) == []


def test_callgrind_option_counts_instructions_per_thread(workdir: Path, tmp_path: Path) -> None:
    """--callgrind DIR: the gateway runs under callgrind, one file per thread, and the
    script prints each busy thread's instructions per message, the event loop first."""
    folder = tmp_path / "callgrind"
    out = run_script(
        workdir, "cpu_per_message.sh", "-m", "12", "-s", "2", "--callgrind", str(folder)
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    loop = re.search(
        r"callgrind thread 1 \(event loop\): ([\d,]+) instructions per message", out.stdout
    )
    total = re.search(r"callgrind, all threads: ([\d,]+) instructions per message", out.stdout)
    assert loop is not None and total is not None, out.stdout
    per_loop, per_all = (int(m.group(1).replace(",", "")) for m in (loop, total))
    # A relayed, scanned and pseudonymised message is hundreds of thousands of
    # instructions on the loop alone; the loop is part of the total.
    assert 100_000 < per_loop <= per_all
    assert (folder / "callgrind.out.1-01").stat().st_size > 0
    assert list(workdir.iterdir()) == []


def test_code_option_runs_the_other_checkout(workdir: Path, tmp_path: Path) -> None:
    """--code DIR: the gateway runs DIR's packages, not those of the checkout the script
    is run from (`python -c` would put the current directory ahead of PYTHONPATH)."""
    repo = Path(__file__).resolve().parents[2]
    other = tmp_path / "other-checkout"
    other.mkdir()
    for entry in [repo / "gateway", repo / "connectors", repo / "crypto"] + sorted(
        repo.glob("portique_compiled__mypyc*.so")
    ):
        (other / entry.name).symlink_to(entry)
    out = run_script(workdir, "cpu_per_message.sh", "-m", "10", "-s", "2", "--code", str(other))
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert f"gateway code: {other / 'gateway'}\n" in out.stdout
    assert "10 messages in" in out.stdout
