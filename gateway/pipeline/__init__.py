"""Message pipeline (sans-IO): raw message + route copies -> one outcome per copy.

Trust boundary: `raw` is untrusted bytes from the network. Output: for each copy, a
verdict and (for PASS/REWRITTEN) the bytes to deliver. Fail closed: any exception or
exceeded budget inside a stage yields HOLD for the copies whose action transforms or
inspects content; only `deliver` copies receive the original bytes unconditionally.

Modules: mime.py (raw MIME tree), message.py (fields of a message and its rebuild),
process.py (stages and the per-copy decision table); file formats live in gateway/files.
"""

from __future__ import annotations

from gateway.pipeline.model import CopyOutcome, MessageOutcome, RouteCopy
from gateway.pipeline.process import process_message

__all__ = ["CopyOutcome", "MessageOutcome", "RouteCopy", "process_message"]
