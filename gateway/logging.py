"""Operational logging: structlog JSON lines on stderr, one event per transaction.

Invariant: log events never carry message bodies or identifier values. The last
processor before rendering (`redact_identifiers`) is a safety net that masks
anything shaped like an identifier (NIR, IBAN, phone, e-mail local part) that a
bug might have let through.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_NIR = re.compile(r"\b[123478]\s?\d{2}\s?\d{2}\s?(?:\d{2}|2[AB])\s?\d{3}\s?\d{3}(?:\s?\d{2})?\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){3,7}(?:\s?[A-Z0-9]{1,3})?\b")
_PHONE = re.compile(r"(?:(?:\+|00)33\s?|\b0)[1-9](?:[\s.-]?\d{2}){4}\b")
_EMAIL_LOCAL = re.compile(r"\b[\w.+-]+@(?=[\w-]+\.)")

# Event keys whose values are addresses the gateway must be able to log (envelope
# of practice senders, lab domains) are masked to their domain by the emitters;
# this pass catches only what slipped through.


# Texts in which `_scrub` found nothing, remembered: the same few recur in every
# message (a peer's "250 2.0.0 from 127.0.0.1" in each delivery record), and the four
# scans cost ~10 us each time (issue 7). Only clean texts are kept, so the memo holds
# nothing identifier-shaped; it starts afresh when full.
_CLEAN_MEMO_SIZE = 1024
_clean_texts: set[str] = set()


def _scrub(text: str) -> str:
    if text in _clean_texts:
        return text
    scrubbed = _NIR.sub("[NIR]", text)
    scrubbed = _IBAN.sub("[IBAN]", scrubbed)
    scrubbed = _PHONE.sub("[TEL]", scrubbed)
    if "@" in scrubbed:  # an e-mail local part needs one (the other marks add none)
        scrubbed = _EMAIL_LOCAL.sub("***@", scrubbed)
    if scrubbed == text:
        if len(_clean_texts) >= _CLEAN_MEMO_SIZE:
            _clean_texts.clear()
        _clean_texts.add(text)
    return scrubbed


def redact_identifiers(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = _scrub(value)
    return event


def configure_logging(level: str = "info", stream: Any = None) -> None:
    logging.basicConfig(level=level.upper(), stream=stream or sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_identifiers,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
