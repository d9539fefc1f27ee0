"""Where the pipeline runs: a small single-part text message on the event loop (a hand-off
to a thread costs more than the work), anything else on a pipeline thread: a message
with parts or a non-text body however small (a crafted PDF or archive must never keep a
file handler busy on the loop, which serves every session and beats the worker's
heartbeat), and any message larger than INLINE_PIPELINE_MAX."""

from __future__ import annotations

import asyncio
import base64
import re
import threading

import pytest

from gateway.service import INLINE_PIPELINE_MAX, runs_inline
from tests.relay._helpers import message, send_sync

ROUTES = [{"name": "labs", "match": ["*@lab.test"], "action": "deliver", "connector": "relay"}]

PDF_ORDER = (
    b"From: dr@practice.test\r\nTo: lab@lab.test\r\nSubject: Bon de commande\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nCouronne 36\r\n"
    b'--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="o.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"%PDF-1.4\n%%EOF\n").replace(b"\n", b"\r\n")
    + b"--B--\r\n"
)


@pytest.mark.parametrize(
    ("raw", "inline"),
    [
        (b"Subject: x\r\n\r\nhello\r\n", True),  # no Content-Type: text/plain
        (b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>x</p>\r\n", True),
        (b"Subject: x\n\nContent-Type: application/pdf\n", True),  # in the body: not a header
        (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B--\r\n", False),
        (b"Content-type:\r\n  Application/PDF\r\n\r\n%PDF-1.4\r\n", False),  # folded, any case
        (b"Content-Type: message/rfc822\r\n\r\nSubject: y\r\n\r\nz\r\n", False),
        (b"Content-Type: model/stl\n\nsolid x\n", False),
        (b"Subject: x\r\n\r\n" + b"x" * 70 * 250, False),  # larger than INLINE_PIPELINE_MAX
    ],
)
def test_only_small_single_part_text_runs_inline(raw: bytes, inline: bool) -> None:
    assert runs_inline(raw) is inline


async def test_the_service_runs_each_message_where_it_should(portique_factory, sink, monkeypatch):
    import gateway.service

    loop_thread = threading.current_thread()
    ran_in: list[threading.Thread] = []
    real_pipeline = gateway.service.process_message

    def recording_pipeline(raw, copies, engine, **settings):  # type: ignore[no-untyped-def]
        ran_in.append(threading.current_thread())
        return real_pipeline(raw, copies, engine, **settings)

    monkeypatch.setattr(gateway.service, "process_message", recording_pipeline)
    svc = await portique_factory(sink.port, routes=ROUTES)
    big_text = message(body="Couronne 36, teinte A3.\r\n" * (INLINE_PIPELINE_MAX // 24 + 1))
    for count, raw in enumerate((message(), PDF_ORDER, big_text), start=1):
        await asyncio.to_thread(send_sync, svc.smtp_port, raw)
        await sink.wait_for(count)
    assert len(ran_in) == 3
    assert ran_in[0] is loop_thread  # the small text message
    assert ran_in[1].name.startswith("pipeline")  # a PDF, however small
    assert ran_in[2].name.startswith("pipeline")  # more than INLINE_PIPELINE_MAX


async def test_waiting_small_messages_have_their_pipelines_run_back_to_back(
    portique_factory, sink, monkeypatch
):
    """After an inline pipeline, the small messages waiting for processing get theirs
    straight away (PIPELINE_BATCH); each message's processing then takes its own outcome:
    one pipeline run per message, every message delivered once, none mixed up, and no
    outcome left behind."""
    import gateway.service

    pipelined: list[bytes] = []
    real_pipeline = gateway.service.process_message

    def recording_pipeline(raw, copies, engine, **settings):  # type: ignore[no-untyped-def]
        pipelined.append(raw)
        return real_pipeline(raw, copies, engine, **settings)

    monkeypatch.setattr(gateway.service, "process_message", recording_pipeline)
    svc = await portique_factory(sink.port, routes=ROUTES)
    taken_ready: list[str] = []

    class ReadyOutcomes(dict):  # type: ignore[type-arg]
        def pop(self, key, default=None):  # type: ignore[no-untyped-def]
            value = super().pop(key, default)
            if value is not None:
                taken_ready.append(key)
            return value

    svc._ready = ReadyOutcomes()
    # Processing waits until every message is accepted, so that messages are waiting.
    accepted_all = asyncio.Event()
    real_process = svc.process_spooled

    async def after_acceptance(spool_id, received=None):  # type: ignore[no-untyped-def]
        await accepted_all.wait()
        return await real_process(spool_id, received)

    svc.process_spooled = after_acceptance
    # As many as the processing tasks take at once, and two batches waiting behind them.
    count = gateway.service.PROCESSING_CONCURRENCY + 2 * gateway.service.PIPELINE_BATCH
    subjects = [f"Commande {i}" for i in range(count)]
    for subject in subjects:
        await asyncio.to_thread(send_sync, svc.smtp_port, message(subject=subject))
    accepted_all.set()
    delivered = await sink.wait_for(count)
    await asyncio.sleep(0.2)  # a duplicate would arrive now
    assert len(pipelined) == count
    got = sorted(re.search(rb"Subject: (.*)\r\n", m.data).group(1).decode() for m in sink.messages)
    assert got == sorted(subjects) and len(delivered) == count
    assert len(taken_ready) >= gateway.service.PIPELINE_BATCH
    assert len(svc._ready) == 0
