"""The seam between the I/O shell and the sans-IO pipeline.

The shell (gateway/service.py) plans one `RouteCopy` per route (and per recipient
domain on pseudonymising routes), hands the raw message and the copies to
`gateway.pipeline.process_message`, and gets one `CopyOutcome` per copy.

Invariant: `CopyOutcome.data` is None unless the verdict is PASS or REWRITTEN, and
it is the original bytes only when the verdict is PASS (which only the `deliver`
action, or a scan with no findings on a non-transforming action, can produce).
`reason` is a fixed, PHI-free phrase that may be shown to the sender and audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.scan.model import Finding, VaultEntry
from gateway.verdicts import Action, Verdict


@dataclass(frozen=True)
class RouteCopy:
    route: str
    action: Action
    connector: str
    recipients: tuple[str, ...]
    audience: str = ""  # recipient domain, for per-lab tokens
    overrides: Mapping[str, str] = field(default_factory=dict)
    unknown_files: str = ""  # pass | hold | reject; "" = route default
    own_patient: str | None = None  # own-data-only: roster key of the recipient patient


@dataclass(frozen=True)
class CopyOutcome:
    copy: RouteCopy
    verdict: Verdict
    data: bytes | None = field(default=None, repr=False)
    findings: tuple[Finding, ...] = ()
    vault_entries: tuple[VaultEntry, ...] = ()
    reason: str = ""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind.value] = out.get(f.kind.value, 0) + 1
        return out


@dataclass(frozen=True)
class MessageOutcome:
    copies: tuple[CopyOutcome, ...]
    # The Subject after redaction (safe for bounces), or None if it could not be made safe.
    safe_subject: str | None = field(default=None, repr=False)
