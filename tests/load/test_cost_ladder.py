"""load-tests/cost_ladder.sh on a few messages: every rung of the ladder (the Python
floor, then aiosmtpd, Portique's audit trail, both) relays every smtp-source message to
smtp-sink and prints its rate and CPU per message; nothing is left behind."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.load._scripts import run_script

pytestmark = pytest.mark.skipif(
    not os.access("/usr/sbin/smtp-source", os.X_OK),
    reason="Debian postfix not installed (make test installs it)",
)


def test_every_rung_relays_every_message_and_reports_its_cost(workdir: Path) -> None:
    out = run_script(workdir, "cost_ladder.sh", "-m", "30", "-s", "4")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rungs = re.findall(
        r"^(\S+) +30 messages in [\d.]+ s = +([\d.]+) msg/s; relay CPU ([\d.]+) ms per message$",
        out.stdout,
        re.M,
    )
    assert [name for name, _rate, _cpu in rungs] == [
        "floor", "aiosmtpd", "audit", "aiosmtpd+audit",
    ]  # fmt: skip
    assert all(float(rate) > 0 for _name, rate, _cpu in rungs)
    assert list(workdir.iterdir()) == []  # its work folder is removed
