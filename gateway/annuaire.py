"""Optional recipient check against the Annuaire Santé FHIR API (off by default).

Asks the ANS FHIR v2 API (`/Practitioner`, `/PractitionerRole`, `/Organization`,
`_search` by `mailbox-mss:exact`, header `ESANTE-API-KEY`) whether an MSSanté
address is published. Turned on by `annuaire_url` + `annuaire_api_key` on the
mssante connector.

Trust boundary: answers come from the network (JSON, untrusted): only the Bundle
`total` / `entry` count is read. The request carries a professional's address only:
patient addresses (`@patient.mssante.fr`, whose local part is an INS) are never sent
(`mailbox_known` answers None for them without a request).

Invariants:
- Rate-limited below the API's published 17 calls/s (default 10/s, one request at a
  time), and cached (default 24 h for found, 1 h for not found; at most 10,000
  addresses) so a busy day does not hammer the API.
- Advisory: a failure (network, TLS, HTTP status, malformed JSON) returns None
  ("could not check"); the trust list stays the gate. Never raises foreign exceptions.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx

from gateway.trustlist import PATIENT_DOMAIN, normalise_domain

DEFAULT_URL = "https://gateway.api.esante.gouv.fr/fhir/v2"
# ANS publishes 17 calls/s per key; 10/s leaves headroom for other tools on the same key.
DEFAULT_RATE_PER_SECOND = 10.0
# A published mailbox rarely disappears within a day; an unknown one may be created soon.
FOUND_TTL = 86400.0
NOT_FOUND_TTL = 3600.0
# Distinct addresses a practice writes to in a day are in the hundreds.
MAX_CACHE_ENTRIES = 10_000
RESOURCES = ("PractitionerRole", "Practitioner", "Organization")


class AnnuaireClient:
    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_URL,
        *,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        verify: ssl.SSLContext | None = None,
        http_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ValueError("annuaire_url must be https://")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._interval = 1.0 / rate_per_second
        self._clock = clock
        self._lock = asyncio.Lock()
        self._next_slot = 0.0
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self.requests = 0
        self._client = httpx.AsyncClient(
            verify=verify or ssl.create_default_context(),
            timeout=http_timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AnnuaireClient({self.base_url!r})"

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, resource: str, address: str) -> int | None:
        async with self._lock:
            wait = self._next_slot - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_slot = self._clock() + self._interval
            self.requests += 1
            try:
                resp = await self._client.get(
                    f"{self.base_url}/{resource}",
                    params={"mailbox-mss:exact": address, "_summary": "count"},
                    headers={"ESANTE-API-KEY": self._api_key, "Accept": "application/fhir+json"},
                )
            except httpx.HTTPError:
                return None
        if resp.status_code != 200:
            return None
        try:
            bundle: Any = resp.json()
        except ValueError:
            return None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return None
        total = bundle.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            return total
        entries = bundle.get("entry")
        return len(entries) if isinstance(entries, list) else None

    async def mailbox_known(self, address: str) -> bool | None:
        """True: published; False: not found in any resource; None: not checked."""
        addr = address.strip().lower()
        if normalise_domain(addr.rpartition("@")[2]) == PATIENT_DOMAIN:
            return None
        now = self._clock()
        cached = self._cache.get(addr)
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(addr)
            return cached[0]
        uncertain = False
        for resource in RESOURCES:
            count = await self._get(resource, addr)
            if count is None:
                uncertain = True
            elif count > 0:
                self._remember(addr, True, FOUND_TTL)
                return True
        if uncertain:
            return None
        self._remember(addr, False, NOT_FOUND_TTL)
        return False

    def _remember(self, address: str, found: bool, ttl: float) -> None:
        self._cache[address] = (found, self._clock() + ttl)
        self._cache.move_to_end(address)
        while len(self._cache) > MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)
