"""No patient data in logs: plant identifiers, run every path, grep what was logged."""

from __future__ import annotations

import asyncio
import json
import logging

from structlog.testing import capture_logs

from tests.relay._helpers import Sink, SinkHandler, message, send_sync, wait_until

NAME = "Jeanne Dupont"
NIR = "2 84 12 75 123 456 78"
PHONE = "06 12 34 56 78"
PATIENT = "jeanne.dupont@patient.mssante.fr"


async def test_no_identifier_reaches_the_logs(portique_factory, caplog):
    caplog.set_level(logging.DEBUG)
    handler = SinkHandler(refuse_rcpt={"gone@other.test": "550 5.1.1 no such user " + NAME})
    sink = await Sink(handler).start()
    try:
        with capture_logs() as logs:
            svc = await portique_factory(
                sink.port,
                routes=[
                    {
                        "name": "labs",
                        "match": ["*@lab.test"],
                        "action": "pseudonymise",
                        "connector": "relay",
                    },
                    {"name": "all", "match": ["*"], "action": "deliver", "connector": "relay"},
                ],
            )
            data = message(
                subject=f"Dossier {NAME} {NIR}", body=f"{NAME} NIR {NIR} tel {PHONE}\r\n"
            )
            await asyncio.to_thread(
                send_sync,
                svc.smtp_port,
                data,
                rcpts=("lab@lab.test", "gone@other.test", PATIENT),
            )
            await wait_until(lambda: svc.processing_idle() and svc.queue.list() == [])
        text = json.dumps(logs, default=str) + caplog.text
        assert logs, "nothing was logged"
        assert any(e["event"] == "smtp_transaction" for e in logs)
        assert any(e["event"] == "delivery" for e in logs)
        assert any(e["event"] == "bounced" and e["dsn"] for e in logs)
        for secret in ("Jeanne", "Dupont", "jeanne.dupont", "84 12 75", "06 12 34", "Dossier"):
            assert secret.lower() not in text.lower(), secret
    finally:
        await sink.stop()


def test_the_safety_net_remembers_only_texts_it_found_clean() -> None:
    """`_scrub` remembers the texts it left unchanged (a peer's reply recurs in every
    delivery record); a text with an identifier is scrubbed every time, never kept."""
    from gateway import logging as portique_logging

    clean = "250 2.0.0 from 127.0.0.1"
    dirty = [
        f"550 5.1.1 <{PATIENT}>: no such user",
        f"tel {PHONE}",
        f"NIR {NIR}",
        "IBAN FR76 3000 6000 0112 3456 7890 189",
    ]
    for _ in range(2):  # the second pass meets the memo
        assert portique_logging._scrub(clean) == clean
        scrubbed = " ".join(portique_logging._scrub(text) for text in dirty)
        for secret in ("jeanne", "06 12", "84 12 75", "3000 6000"):
            assert secret not in scrubbed, secret
    assert clean in portique_logging._clean_texts
    assert portique_logging._clean_texts.isdisjoint(dirty)
