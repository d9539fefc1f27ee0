"""Run `portique serve` as a real subprocess for integration tests.

Every listener binds port 0; the ports are read from the start-up line the runtime
prints ("portique: listening on H:P, metrics on H:P, admin console on https://H:P, ...").
The gateway's stdout and stderr go to files so a test can grep them afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PORTIQUE = str(Path(sys.executable).with_name("portique"))
# Seconds for the gateway to print its start-up line: key creation, engine compile and
# TLS certificate generation take ~2 s on the 2-core CI machine; 30 s absorbs a loaded box.
START_TIMEOUT = 30.0
# Seconds for an orderly stop after SIGTERM (SMTP drain, audit close with checkpoint).
STOP_TIMEOUT = 30.0

_STARTED = re.compile(r"portique: listening on ([0-9.]+):(\d+)")
_METRICS = re.compile(r"metrics on ([0-9.]+):(\d+)")
_ADMIN = re.compile(r"admin console on https://([0-9.]+):(\d+)")


def run_cli(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One `portique` command against the same config (roster import, audit verify...)."""
    return subprocess.run(
        [PORTIQUE, *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
    )


@dataclass
class ServeProcess:
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    smtp_port: int = 0
    metrics_port: int = 0
    admin_port: int = 0
    stdout_path: Path = field(init=False)
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stdout_path = self.config.parent / "serve.stdout"
        self.stderr_path = self.config.parent / "serve.stderr"

    def start(self) -> ServeProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [PORTIQUE, "serve", "-c", str(self.config)],
                stdout=out,
                stderr=err,
                cwd=self.config.parent,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"portique serve exited: {self.stderr_tail()}")
            line = self.stdout_path.read_text()
            started = _STARTED.search(line)
            if started:
                self.smtp_port = int(started.group(2))
                if m := _METRICS.search(line):
                    self.metrics_port = int(m.group(2))
                if m := _ADMIN.search(line):
                    self.admin_port = int(m.group(2))
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"portique serve did not start: {self.stderr_tail()}")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("portique serve did not stop on SIGTERM") from None
        return int(self.proc.returncode)

    def stderr_tail(self, chars: int = 3000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )
