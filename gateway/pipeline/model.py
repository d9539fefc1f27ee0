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
from typing import Final

from gateway.scan.model import Finding, VaultEntry
from gateway.verdicts import Action, Verdict


def _compiled() -> bool:
    """True when mypyc compiled this module (a compiled function has no __code__)."""
    return not hasattr(_compiled, "__code__")


# The outcomes, built per copy and per message, have an __init__ of their own: the one
# @dataclass generates runs interpreted even in a compiled module (about 1 us per object).
# Compiled, a plain store is mypyc's native slot store (Python callers still meet the
# frozen __setattr__); interpreted, object.__setattr__ stores past it, as a generated
# __init__ does (gateway/scan/model.py's Finding does the same).
_COMPILED: Final = _compiled()
_set_attribute: Final = object.__setattr__


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


@dataclass(frozen=True, init=False)
class CopyOutcome:
    copy: RouteCopy
    verdict: Verdict
    data: bytes | None = field(default=None, repr=False)
    findings: tuple[Finding, ...] = ()
    vault_entries: tuple[VaultEntry, ...] = ()
    reason: str = ""

    def __init__(
        self,
        copy: RouteCopy,
        verdict: Verdict,
        data: bytes | None = None,
        findings: tuple[Finding, ...] = (),
        vault_entries: tuple[VaultEntry, ...] = (),
        reason: str = "",
    ) -> None:
        if _COMPILED:
            self.copy = copy  # type: ignore[misc]
            self.verdict = verdict  # type: ignore[misc]
            self.data = data  # type: ignore[misc]
            self.findings = findings  # type: ignore[misc]
            self.vault_entries = vault_entries  # type: ignore[misc]
            self.reason = reason  # type: ignore[misc]
        else:
            _set_attribute(self, "copy", copy)
            _set_attribute(self, "verdict", verdict)
            _set_attribute(self, "data", data)
            _set_attribute(self, "findings", findings)
            _set_attribute(self, "vault_entries", vault_entries)
            _set_attribute(self, "reason", reason)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind.value] = out.get(f.kind.value, 0) + 1
        return out


@dataclass(frozen=True, init=False)
class MessageOutcome:
    copies: tuple[CopyOutcome, ...]
    # The Subject after redaction (safe for bounces), or None if it could not be made safe.
    safe_subject: str | None = field(default=None, repr=False)

    def __init__(self, copies: tuple[CopyOutcome, ...], safe_subject: str | None = None) -> None:
        if _COMPILED:
            self.copies = copies  # type: ignore[misc]
            self.safe_subject = safe_subject  # type: ignore[misc]
        else:
            _set_attribute(self, "copies", copies)
            _set_attribute(self, "safe_subject", safe_subject)
