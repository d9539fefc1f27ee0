"""Messages dense with identifiers stay linear: one HTML body with 20,000 names.

Reported: a 450 KB HTML body with 50,000 names took 108 s. Two quadratic steps were found
and fixed: overlap resolution in the engine, and verification, which looked up the
engine's own tokens again for every finding (50,000 "M. PAT-..." took 517 s CPU). At
20,000 names either would take well over a minute; the bound below is generous so that a
shared machine cannot make it flake.
"""

from __future__ import annotations

import time

import pytest

from tests.pipeline._helpers import assert_no_planted, engine, message, run

NAMES = 20_000
# CPU seconds for one message; linear code needs about 1 s on the 2-core test machine.
BOUND = 20.0


def _context_names() -> str:
    return "".join(f"M. Abc{chr(97 + i % 26)}{chr(97 + (i // 26) % 26)}, " for i in range(NAMES))


@pytest.mark.parametrize(
    "html",
    [
        pytest.param(lambda: "DUPONT Jean, " * NAMES, id="rostered"),
        pytest.param(_context_names, id="by-context"),
    ],
)
def test_html_body_with_twenty_thousand_names(html: object) -> None:
    assert callable(html)
    raw = message(body="Bonjour\n", html="<p>" + html() + "</p>")
    engine()  # built outside the measured time
    started = time.process_time()
    copy = run(raw).copies[0]
    elapsed = time.process_time() - started
    assert copy.verdict == "rewritten", copy.reason
    assert copy.data is not None
    assert_no_planted(copy.data)
    assert b"M. Abc" not in copy.data
    assert elapsed < BOUND, f"{elapsed:.1f} s CPU"


class _Clock:
    """A fake clock that jumps forward once a given number of readings have been taken."""

    def __init__(self, jump_after: int) -> None:
        self.readings = 0
        self.jump_after = jump_after

    def __call__(self) -> float:
        self.readings += 1
        return 1_000.0 if self.readings > self.jump_after else 0.0


def test_time_budget_is_checked_inside_the_scan_of_a_message() -> None:
    """The budget is read per field while scanning, not only between stages: a clock that
    runs out after a few readings stops the scan of a many-field message."""
    raw = message(body="Bonjour\n", html="<p>" + "<b>DUPONT Jean</b> " * 300 + "</p>")
    # Count the readings a full run takes when time never runs out.
    never = _Clock(jump_after=10**9)
    assert run(raw, clock=never, budget_seconds=50).copies[0].verdict == "rewritten"
    assert never.readings > 600  # per field (about 600 HTML text nodes), not per stage
    for jump_after in (3, never.readings // 3, never.readings // 2, never.readings - 2):
        clock = _Clock(jump_after=jump_after)
        copy = run(raw, clock=clock, budget_seconds=50).copies[0]
        assert copy.verdict == "hold", jump_after
        assert copy.reason == "message processing time budget exceeded"
        assert copy.data is None
