"""No identifier reaches a log line: findings, results, vault entries and roster entries
are logged the way a careless caller would, through the real structlog configuration,
and the output is searched for every planted value (case, accents, separators ignored)."""

from __future__ import annotations

import io

import structlog

from gateway.logging import configure_logging, get_logger
from gateway.scan import TransformPolicy, build_engine
from tests.scan.corpus import PRACTICE, leaked, make_corpus


def test_scanning_logs_no_planted_identifier() -> None:
    messages, roster = make_corpus(60, seed=9, extra_roster=50)
    scan = build_engine(
        patients=roster, practice=PRACTICE, digest_key=b"d" * 32, pseudonym_key=b"p" * 32
    )
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    try:
        log = get_logger("test.scan")
        for message in messages:
            findings = scan.scan_fields(message.fields)
            result = scan.rewrite_fields(
                message.fields, findings, TransformPolicy(audience="lab.fr")
            )
            log.info(
                "scanned",
                fields=message.fields,
                findings=findings,
                result=result,
                vault_entries=result.vault_entries,
                kinds=[f.kind.value for f in findings],
            )
            log.debug("roster sample", patients=roster[:3])
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    assert output.count('"event": "scanned"') == len(messages)
    assert '"digest"' in output or "digest=" in output  # findings really were logged
    planted = [(kind, value) for m in messages for kind, value in m.planted]
    roster_values = [("name", p.last_name) for p in roster[:3]] + [
        ("nir", p.nir) for p in roster[:3]
    ]
    leaks = [f"{kind}" for kind, value in planted + roster_values if leaked(kind, value, output)]
    assert leaks == []
