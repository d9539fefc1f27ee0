"""Quality on the synthetic corpus (issue 3, "Done when"): leak rate, trap loss, engines agree.

Leak rate: share of planted identifier values that survive anywhere in the output
fields, ignoring case, accents and separators. Trap loss: share of look-alikes
(tooth numbers, shades, order and invoice numbers, practitioner RPPS, prices,
appointment dates, durations such as "depuis 3 ans", "rue" or "place" in clinical text)
that no longer appear verbatim.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import pytest

from crypto.pseudonym import TOKEN_PATTERN
from gateway.scan import Engine, Finding, TextField, TransformPolicy, build_engine
from tests.scan.corpus import (
    EXTRA_TEMPLATES,
    PRACTICE,
    TEMPLATES,
    Message,
    leaked,
    make_corpus,
)

CORPUS_SIZE = 520  # issue 3 asks for at least 500 messages
DIGEST_KEY = b"k" * 32
PSEUDONYM_KEY = b"s" * 32


@lru_cache(maxsize=1)
def corpus() -> tuple[list[Message], list]:  # type: ignore[type-arg]
    return make_corpus(CORPUS_SIZE, templates=TEMPLATES + EXTRA_TEMPLATES)


@lru_cache(maxsize=4)
def engine(kind: str, with_roster: bool) -> Engine:
    messages, roster = corpus()
    return build_engine(
        patients=roster if with_roster else (),
        practice=PRACTICE,
        digest_key=DIGEST_KEY,
        pseudonym_key=PSEUDONYM_KEY,
        engine=kind,
    )


def _measure(scan: Engine) -> tuple[Counter[str], Counter[str], int, int, list[str]]:
    planted: Counter[str] = Counter()
    leaks: Counter[str] = Counter()
    traps = lost = 0
    examples: list[str] = []
    for message in corpus()[0]:
        findings = scan.scan_fields(message.fields)
        result = scan.rewrite_fields(
            message.fields, findings, TransformPolicy(audience="labo.example")
        )
        output = "\n".join(result.texts)
        for kind, value in message.planted:
            planted[kind] += 1
            if leaked(kind, value, output):
                leaks[kind] += 1
                examples.append(f"{message.template}/{kind}")
        for trap in message.traps:
            traps += 1
            if trap not in output:
                lost += 1
                examples.append(f"{message.template}/trap")
    return planted, leaks, traps, lost, examples


@pytest.mark.parametrize(("with_roster", "max_leak"), [(True, 0.005), (False, 0.03)])
def test_leak_rate_and_trap_loss(with_roster: bool, max_leak: float) -> None:
    planted, leaks, traps, lost, examples = _measure(engine("auto", with_roster))
    total = sum(planted.values())
    assert total >= 2500  # the corpus really plants thousands of values
    rate = sum(leaks.values()) / total
    summary = f"leaks {dict(leaks)} of {dict(planted)}; {Counter(examples).most_common(6)}"
    assert rate <= max_leak, summary
    for kind in ("nir", "iban", "email", "phone"):
        assert leaks[kind] == 0, summary
    assert lost / traps <= 0.01, summary


def test_a_roster_of_other_patients_leaks_no_more_than_none() -> None:
    """A roster that holds none of the messages' patients but others of the same surnames
    (the corpus draws every name from one list): the messages' patients are read in
    context, as without a roster, and a roster never makes more of them leak. A surname
    that one rostered patient bears is only a guess of that patient: it must not win over
    the name read around it ("Noah CHEVALLIER"), which left "Noah" in clear and linked
    another patient (before: 84 names leaked of 1,605, against 62 without a roster)."""
    _, roster = corpus()
    others = roster[CORPUS_SIZE // 2 :]  # make_corpus: its pool of patients, then others
    assert len(others) == 1000
    scan = build_engine(
        patients=others,
        practice=PRACTICE,
        digest_key=DIGEST_KEY,
        pseudonym_key=PSEUDONYM_KEY,
        engine="auto",
    )
    planted, leaks, traps, lost, examples = _measure(scan)
    _, leaks_without, _, _, _ = _measure(engine("auto", False))
    summary = f"leaks {dict(leaks)} of {dict(planted)}; {Counter(examples).most_common(6)}"
    assert sum(leaks.values()) <= sum(leaks_without.values()), summary
    assert sum(leaks.values()) / sum(planted.values()) <= 0.03, summary
    for kind in ("nir", "iban", "email", "phone"):
        assert leaks[kind] == 0, summary
    assert lost / traps <= 0.01, summary


def test_at_least_500_messages_in_five_templates() -> None:
    messages = corpus()[0]
    assert len(messages) >= 500
    assert Counter(m.template for m in messages).keys() == {
        "lab_order",
        "referral",
        "billing",
        "reminder",
        "clinical_note",
    }


@pytest.mark.parametrize("with_roster", [True, False])
def test_hyperscan_and_re_engines_find_the_same(with_roster: bool) -> None:
    fast, slow = engine("hyperscan", with_roster), engine("re", with_roster)
    assert (fast.engine_name, slow.engine_name) == ("hyperscan", "re")
    compared = 0
    for message in corpus()[0]:
        a: list[Finding] = fast.scan_fields(message.fields)
        b: list[Finding] = slow.scan_fields(message.fields)
        assert a == b
        compared += len(a)
    assert compared > 2000


@pytest.mark.parametrize("kind", ["hyperscan", "re"])
def test_scan_spans_are_the_findings_spans(kind: str) -> None:
    """The verification's digest-free scan reports exactly the findings' spans, in order,
    on the messages and on their rewritten copies (where tokens stand)."""
    scan = engine(kind, True)
    policy = TransformPolicy(audience="labo.example")
    compared = 0
    for message in corpus()[0]:
        findings = scan.scan_fields(message.fields)
        rewritten = scan.rewrite_fields(message.fields, findings, policy).texts
        copy = [TextField(text, f.kind) for text, f in zip(rewritten, message.fields, strict=True)]
        for fields in (message.fields, copy):
            expected = [(f.kind, f.field, f.start, f.end) for f in scan.scan_fields(fields)]
            assert scan.scan_spans(fields) == expected
            compared += len(expected)
    assert compared > 2000


def test_rostered_patient_gets_one_token_per_lab() -> None:
    scan = engine("auto", True)
    message = corpus()[0][0]
    findings = scan.scan_fields(message.fields)
    result = scan.rewrite_fields(message.fields, findings, TransformPolicy(audience="labo.example"))
    tokens = {t for text in result.texts for t in TOKEN_PATTERN.findall(text)}
    assert len(tokens) == 1
    assert {e.token for e in result.vault_entries} == tokens
