"""process_message: one analysis and one scan per message, one decision per route copy.

Trust boundary: `raw` is untrusted bytes from the network; `copies` and the engine come
from Portique's configuration. Output: one CopyOutcome per copy, whose `reason` is always
one of the fixed, PHI-free phrases below (or a handler's fixed ContentError reason) and
whose `data` is the original bytes only for PASS.

Stages, in order (plain functions, fail closed at each):
1. analyse: MIME walk + file handlers -> fields (gateway/pipeline/message.py);
2. scan: `engine.scan_fields` over every field of the message at once;
3. decide per copy (action table below); on transforming routes, rewrite with the copy's
   TransformPolicy, rebuild, then verify: the output must parse again and a rescan must
   find nothing the policy should have transformed (a second line of defence against a
   handler that puts a value back). Every part of the output is parsed and every field
   rescanned; what depends on header bytes alone (the fields of a header block, the
   pairs of an address header) is taken from the input's analysis where the bytes are
   the same (message.AnalysisMemo): the same result, not read twice.
Any exception in a stage makes every copy that needs inspection HOLD; only `deliver`
copies get the original bytes without inspection.

Time budget: `budget_seconds` is checked between stages and inside the long loops (per
part while analysing, rebuilding and verifying; per field while scanning and rewriting),
so one huge part cannot run far past it. Sans-IO code cannot interrupt a running handler
or one field's scan; the I/O shell enforces a hard timeout around the call.
"""

from __future__ import annotations

import hashlib
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Final

from gateway.config import FilesConfig
from gateway.errors import ContentError, LimitExceeded
from gateway.files.base import RewriteSession
from gateway.pipeline.message import AnalysisMemo, MessageAnalysis, analyse_message
from gateway.pipeline.model import CopyOutcome, MessageOutcome, RouteCopy
from gateway.scan.model import (
    Finding,
    IdentifierKind,
    ScanEngine,
    TextField,
    TransformPolicy,
    TypeAction,
)
from gateway.verdicts import Action, Verdict

# Fixed reasons: shown to senders and written to the audit trail; never carry content.
REASON_ROUTE_HOLDS: Final = "route holds all mail for review"
REASON_ROUTE_REJECTS: Final = "route rejects all mail"
REASON_NO_SCANNER: Final = "content scanner unavailable"
REASON_INTERNAL: Final = "internal error while processing the message"
REASON_UNKNOWN_FILE: Final = "attachment of a type that cannot be scanned"
REASON_BURNED_IN: Final = "image with burned-in annotations cannot be cleaned"
REASON_LOCKED: Final = "document with patient identifiers cannot be rewritten safely (PDF)"
REASON_STRUCTURED: Final = "patient identifiers in a MIME header that cannot be rewritten safely"
REASON_NOT_OWN: Final = "message contains identifiers of another patient"
REASON_BAD_OVERRIDES: Final = "route identifier overrides are invalid"
REASON_VERIFY: Final = "rewritten message failed verification"
REASON_BUDGET: Final = "message processing time budget exceeded"
DEFAULT_BUDGET_SECONDS: Final = 60.0  # matches ScanConfig.message_budget's default
# What the engine writes in place of an identifier: PAT-XXXXX-XXXXX tokens, [LABEL]s.
_OWN_MARKS: Final = re.compile(r"PAT-[0-9A-Z]{5}-[0-9A-Z]{5}|\[[A-Z_]{2,20}\]")

_INSPECTING: Final = frozenset(
    {Action.PSEUDONYMISE, Action.REDACT, Action.REJECT_IF_PHI, Action.OWN_DATA_ONLY}
)


def process_message(
    raw: bytes,
    copies: Sequence[RouteCopy],
    engine: ScanEngine | None,
    *,
    limits: FilesConfig | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    verify: bool = True,
) -> MessageOutcome:
    """Decide every copy of one message. Never raises for bad content."""
    deadline = clock() + budget_seconds
    check = budget_check(deadline, clock)
    analysis: MessageAnalysis | None = None
    findings: list[Finding] = []
    failure = ""
    try:
        analysis = analyse_message(raw, limits or FilesConfig(), deadline, clock)
        if engine is None:
            failure = REASON_NO_SCANNER
        else:
            findings = list(engine.scan_fields(analysis.fields, check=check))
            findings += note_findings(analysis)
            check()
    except ContentError as exc:
        failure = str(exc) or REASON_INTERNAL
    except Exception:
        failure = REASON_INTERNAL

    outcomes = []
    for copy in copies:
        try:
            outcome = decide_copy(
                raw, copy, engine, analysis, findings, failure, limits, deadline, clock, verify
            )
        except ContentError as exc:
            outcome = CopyOutcome(copy, Verdict.HOLD, reason=str(exc) or REASON_INTERNAL)
        except Exception:
            outcome = CopyOutcome(copy, Verdict.HOLD, reason=REASON_INTERNAL)
        outcomes.append(outcome)
    try:
        subject = safe_subject(analysis, findings, engine)
    except Exception:
        subject = None  # bounces then leave the subject out
    return MessageOutcome(tuple(outcomes), safe_subject=subject)


def budget_check(deadline: float, clock: Callable[[], float]) -> Callable[[], None]:
    """A check that raises LimitExceeded once `clock()` is past `deadline`. Called between
    stages and inside long loops (per field while scanning and rewriting, per part while
    rebuilding and verifying), so one huge part cannot run far past the budget."""

    def check() -> None:
        if clock() > deadline:
            raise LimitExceeded(REASON_BUDGET)

    return check


def note_findings(analysis: MessageAnalysis) -> list[Finding]:
    """Findings a handler reported without text (BURNED_IN)."""
    return [
        Finding(kind=kind, field=max(anchor, 0), start=0, end=0, digest="")
        for kind, anchor in analysis.notes
    ]


def policy_for(copy: RouteCopy) -> TransformPolicy:
    default = TypeAction.PSEUDONYMISE if copy.action == Action.PSEUDONYMISE else TypeAction.REDACT
    overrides = parse_overrides(copy.overrides)
    return TransformPolicy(audience=copy.audience, default=default, overrides=overrides)


def parse_overrides(raw: Mapping[str, str]) -> dict[IdentifierKind, TypeAction]:
    if not raw:
        return {}  # most routes: no generic Mapping iteration per copy
    try:
        return {IdentifierKind(k): TypeAction(v) for k, v in raw.items()}
    except ValueError as exc:
        raise ContentError(REASON_BAD_OVERRIDES) from exc


def counts_phrase(findings: Sequence[Finding]) -> str:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind.value] = counts.get(f.kind.value, 0) + 1
    return ", ".join(f"{kind} x{n}" for kind, n in sorted(counts.items()))


def decide_copy(
    raw: bytes,
    copy: RouteCopy,
    engine: ScanEngine | None,
    analysis: MessageAnalysis | None,
    findings: list[Finding],
    failure: str,
    limits: FilesConfig | None,
    deadline: float,
    clock: Callable[[], float],
    verify: bool,
) -> CopyOutcome:
    action = copy.action
    if action == Action.DELIVER:
        return CopyOutcome(copy, Verdict.PASS, data=raw)
    if action == Action.HOLD:
        return CopyOutcome(copy, Verdict.HOLD, reason=REASON_ROUTE_HOLDS)
    if action == Action.REJECT or action not in _INSPECTING:
        return CopyOutcome(copy, Verdict.REJECT, reason=REASON_ROUTE_REJECTS)
    if failure or analysis is None or engine is None:
        return CopyOutcome(copy, Verdict.HOLD, reason=failure or REASON_INTERNAL)
    found = tuple(findings)
    if analysis.unknown:
        unknown_policy = copy.unknown_files or "hold"
        if unknown_policy == "reject":
            return CopyOutcome(copy, Verdict.REJECT, findings=found, reason=REASON_UNKNOWN_FILE)
        if unknown_policy != "pass":
            return CopyOutcome(copy, Verdict.HOLD, findings=found, reason=REASON_UNKNOWN_FILE)

    if action == Action.REJECT_IF_PHI:
        if findings:
            reason = "patient identifiers found: " + counts_phrase(findings)
            return CopyOutcome(copy, Verdict.REJECT, findings=found, reason=reason)
        return CopyOutcome(copy, Verdict.PASS, data=raw)
    if action == Action.OWN_DATA_ONLY:
        if not findings:
            return CopyOutcome(copy, Verdict.PASS, data=raw)
        if copy.own_patient is not None and all(f.patient == copy.own_patient for f in findings):
            return CopyOutcome(copy, Verdict.PASS, data=raw, findings=found)
        return CopyOutcome(copy, Verdict.REJECT, findings=found, reason=REASON_NOT_OWN)

    # pseudonymise / redact
    policy = policy_for(copy)
    if any(f.kind == IdentifierKind.BURNED_IN for f in findings):
        return CopyOutcome(copy, Verdict.HOLD, findings=found, reason=REASON_BURNED_IN)
    text_findings = [f for f in findings if f.kind != IdentifierKind.BURNED_IN]
    if any(
        f.field in analysis.structured and policy.action_for(f.kind) != TypeAction.KEEP
        for f in text_findings
    ):
        return CopyOutcome(copy, Verdict.HOLD, findings=found, reason=REASON_STRUCTURED)
    if any(
        f.field in analysis.locked and policy.action_for(f.kind) != TypeAction.KEEP
        for f in text_findings
    ):
        return CopyOutcome(copy, Verdict.HOLD, findings=found, reason=REASON_LOCKED)
    if not text_findings and not analysis.cleaned:
        return CopyOutcome(copy, Verdict.PASS, data=raw)
    check = budget_check(deadline, clock)
    result = engine.rewrite_fields(analysis.fields, text_findings, policy, check=check)
    check()
    audience = copy.audience
    # Derived only if a DICOM file remaps a UID: it hashes the whole message.
    session = RewriteSession(salt=lambda: uid_salt(raw, audience))
    data = analysis.rebuild(result.texts, session, check)
    if data is raw or data == raw:
        if any(policy.action_for(f.kind) != TypeAction.KEEP for f in text_findings):
            # Findings the policy transforms, yet nothing changed: never send the original.
            return CopyOutcome(copy, Verdict.HOLD, findings=found, reason=REASON_VERIFY)
        return CopyOutcome(copy, Verdict.PASS, data=raw, findings=found)
    if verify:
        try:
            verify_output(data, engine, policy, limits, deadline, clock, analysis.memo)
        except ContentError as exc:
            return CopyOutcome(copy, Verdict.HOLD, findings=found, reason=str(exc))
    return CopyOutcome(
        copy,
        Verdict.REWRITTEN,
        data=data,
        findings=found,
        vault_entries=tuple(result.vault_entries),
    )


def uid_salt(raw: bytes, audience: str) -> bytes:
    return hashlib.sha256(
        b"portique-uid\x00" + hashlib.sha256(raw).digest() + audience.encode()
    ).digest()


def verify_output(
    data: bytes,
    engine: ScanEngine,
    policy: TransformPolicy,
    limits: FilesConfig | None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    memo: AnalysisMemo | None = None,
) -> None:
    """The rebuilt message must parse, and a rescan must find nothing left to transform.

    With a deadline, running out of time raises LimitExceeded (the budget's reason).
    `memo` is the input's analysis memo: the output's unchanged headers are read from it
    (the same result as reading them again; every part is still parsed and rescanned)."""
    check = budget_check(deadline, clock) if deadline is not None else None
    try:
        again = analyse_message(data, limits or FilesConfig(), deadline, clock, memo)
    except LimitExceeded as exc:
        if str(exc) == REASON_BUDGET:
            raise
        raise ContentError(REASON_VERIFY) from exc
    except ContentError as exc:
        raise ContentError(REASON_VERIFY) from exc
    # The engine's own tokens and labels per field, found once: looking them up again for
    # every finding made verification quadratic (50,000 "M. PAT-..." took minutes).
    # The scan's spans, without the findings' digests: nothing here reads them.
    marks: dict[int, tuple[list[int], list[int]]] = {}
    for kind, field, start, end in engine.scan_spans(again.fields, check=check):
        if policy.action_for(kind) == TypeAction.KEEP:
            continue
        if field not in marks:
            found = own_mark_spans(again.fields[field].text)
            marks[field] = ([s for s, _e in found], [e for _s, e in found])
        starts, ends = marks[field]
        # Marks never overlap, so sorted by start they are sorted by end: the first mark
        # ending after the finding's start is the only candidate to meet it.
        i = bisect_right(ends, start)
        if i < len(starts) and starts[i] < end:
            continue  # the engine's own token or label, or a part of one
        raise ContentError(REASON_VERIFY)


def own_mark_spans(text: str) -> list[tuple[int, int]]:
    """`[m.span() for m in _OWN_MARKS.finditer(text)]`, trying the regex only where a mark
    can start: at "PAT-" or "[". Its search tried every position of the text (a rewritten
    2 KB order holds a handful of marks), which was 2 % of process_message. The leftmost
    candidate where the regex matches is where finditer's search would stop, and the next
    search starts after that match, as finditer's does."""
    spans: list[tuple[int, int]] = []
    match = _OWN_MARKS.match
    token = text.find("PAT-")
    label = text.find("[")
    while token >= 0 or label >= 0:
        at = token if label < 0 or 0 <= token < label else label
        m = match(text, at)
        resume = at + 1
        if m is not None:
            spans.append(m.span())
            resume = m.end()
        if 0 <= token < resume:
            token = text.find("PAT-", resume)
        if 0 <= label < resume:
            label = text.find("[", resume)
    return spans


def safe_subject(
    analysis: MessageAnalysis | None, findings: Sequence[Finding], engine: ScanEngine | None
) -> str | None:
    """The Subject with every finding redacted to its type label, for bounce notices."""
    if analysis is None or engine is None:
        return None
    index = analysis.subject_field
    if index is None:
        return ""
    subject = analysis.fields[index]
    own = [replace(f, field=0) for f in findings if f.field == index and f.end > f.start]
    if not own:
        return subject.text
    try:
        result = engine.rewrite_fields(
            [TextField(subject.text, subject.kind)],
            own,
            TransformPolicy(audience="", default=TypeAction.REDACT),
        )
    except Exception:
        return None
    return result.texts[0] if result.texts else None
