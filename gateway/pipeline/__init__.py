"""Message pipeline (sans-IO): raw message + route copies -> one outcome per copy.

Trust boundary: `raw` is untrusted bytes from the network. Output: for each copy, a
verdict and (for PASS/REWRITTEN) the bytes to deliver. Fail closed: any exception or
exceeded budget inside a stage yields HOLD for the copies whose action transforms or
inspects content; only `deliver` copies receive the original bytes unconditionally.

This module is the seam; the MIME walk and file handlers are filled in by
gateway/pipeline/message.py (issue "Messages and files").
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.pipeline.model import CopyOutcome, MessageOutcome, RouteCopy
from gateway.scan.model import ScanEngine
from gateway.verdicts import Action, Verdict

__all__ = ["CopyOutcome", "MessageOutcome", "RouteCopy", "process_message"]


def process_message(
    raw: bytes,
    copies: Sequence[RouteCopy],
    engine: ScanEngine | None,
) -> MessageOutcome:
    """Decide every copy of one message. Never raises for bad content."""
    outcomes = []
    for copy in copies:
        if copy.action == Action.DELIVER:
            outcomes.append(CopyOutcome(copy, Verdict.PASS, data=raw))
        elif copy.action == Action.REJECT:
            outcomes.append(CopyOutcome(copy, Verdict.REJECT, reason="route rejects all mail"))
        else:
            # Until the scanner is wired in, nothing that needs inspection may leave.
            outcomes.append(CopyOutcome(copy, Verdict.HOLD, reason="content scanner unavailable"))
    return MessageOutcome(tuple(outcomes))
