"""The seam to the pipeline: vault entries are stored before a rewritten copy is queued,
and a rewritten copy whose tokens cannot be stored is held, never sent."""

from __future__ import annotations

import asyncio

from gateway.pipeline.model import CopyOutcome, MessageOutcome
from gateway.scan.model import VaultEntry
from gateway.verdicts import Verdict
from tests.relay._helpers import message, send_sync, wait_until

ROUTES = [{"name": "labs", "match": ["*@lab.test"], "action": "pseudonymise", "connector": "relay"}]
ENTRY = VaultEntry(
    token="PAT-AAAAA-BBBBB", audience="lab.test", patient="p1", identity="DUPONT Jeanne"
)


def _rewriting_pipeline(raw, copies, engine, **_settings):
    return MessageOutcome(
        tuple(
            CopyOutcome(
                c,
                Verdict.REWRITTEN,
                data=raw.replace(b"Bonjour", b"PAT-AAAAA-BBBBB"),
                vault_entries=(ENTRY,),
            )
            for c in copies
        ),
        safe_subject="Hello",
    )


class RecordingVault:
    def __init__(self, service_ref: list) -> None:
        self.stored: list[tuple[VaultEntry, ...]] = []
        self.queue_sizes_at_store: list[int] = []
        self.service_ref = service_ref

    def holds_all(self, entries) -> bool:
        return False  # every copy's entries go through store

    def store(self, entries) -> None:
        self.queue_sizes_at_store.append(len(self.service_ref[0].queue.list()))
        self.stored.append(tuple(entries))


async def test_vault_entries_are_stored_before_the_copy_is_queued(
    portique_factory, sink, monkeypatch
):
    import gateway.service

    monkeypatch.setattr(gateway.service, "process_message", _rewriting_pipeline)
    ref: list = []
    vault = RecordingVault(ref)
    svc = await portique_factory(sink.port, routes=ROUTES, service_kwargs={"vault": vault})
    ref.append(svc)
    await asyncio.to_thread(send_sync, svc.smtp_port, message())
    (got,) = await sink.wait_for(1)
    assert b"PAT-AAAAA-BBBBB" in got.data and b"Bonjour" not in got.data
    assert vault.stored == [(ENTRY,)]
    assert vault.queue_sizes_at_store == [0]  # nothing was queued before the mapping existed


async def test_rewritten_copy_without_a_vault_is_held(portique_factory, sink, monkeypatch):
    import gateway.service

    monkeypatch.setattr(gateway.service, "process_message", _rewriting_pipeline)
    svc = await portique_factory(sink.port, routes=ROUTES)
    await asyncio.to_thread(send_sync, svc.smtp_port, message())
    await wait_until(lambda: svc.processing_idle() and svc.quarantine.list())
    (held,) = svc.quarantine.list()
    assert held.reason == "pseudonym vault unavailable"
    await asyncio.sleep(0.3)
    assert all(b"PAT-AAAAA" not in m.data for m in sink.messages)
