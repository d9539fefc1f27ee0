"""The ANS MSSanté trust list ("liste blanche"): which domains are in the espace de confiance.

Input: `listeblanchemssante.xml` as published by ANS (untrusted bytes: a file on disk,
or a download over HTTPS). Root `ListeBlancheMSSante` in the namespace
https://listeblanche.mssante.fr/schema, `DateDeGeneration`, then
`ListeDomaines/Domaine` entries with `Nom`, `Description`, `DNCertificatOperateur`,
`ResponsableContact`, `SupportContact`, `DateMAJ`. One entry per (domain, operator
server-certificate DN), so a domain may appear several times.

Output: a frozen `TrustList` indexing Nom -> set of operator DNs.

Invariants:
- Parsed with defusedxml: entity expansion, external entities and DTDs are refused.
- Domains match exactly (lower-cased, trailing dot removed). Never a suffix rule: a
  `.mssante.fr` ending proves nothing, and two listed domains end in apicrypt.org.
- `<INS>@patient.mssante.fr` is an MSSanté address only if the local part is a valid
  NIR/INS with its key (python-stdnum), per Réf#2 ECO.2.2.6.
- Malformed input (not well-formed, wrong root or namespace, no usable entry) raises
  TrustListError with a message that names the problem, never a partial list. A
  single Domaine whose Nom is missing or not a domain name is left out and reported
  in `skipped_entries` (the real publication has one). A refresh that fails keeps the
  last good copy (file and memory).
- The published file (13 March 2025 copy) lacks the closing `</ListeBlancheMSSante>`
  tag after a complete `</ListeDomaines>`. That exact shape is accepted (nothing is
  missing); any other truncation is malformed.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from stdnum.exceptions import ValidationError
from stdnum.fr import nir

from gateway.errors import PortiqueError, TrustListError

NAMESPACE = "https://listeblanche.mssante.fr/schema"
PATIENT_DOMAIN = "patient.mssante.fr"
# The real list is ~1.4 MB for 6,554 entries; 64 MiB leaves room for growth while
# refusing a runaway download or a wrong file.
MAX_TRUST_LIST_BYTES = 64 * 1024 * 1024
# DNS: a domain name is at most 253 characters (RFC 1035 2.3.4).
MAX_DOMAIN_LENGTH = 253
_DOMAIN_RE = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_ROOT_CLOSE = b"</ListeBlancheMSSante>"


def normalise_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def normalise_dn(dn: str) -> str:
    """Canonical form of an operator DN for comparison ("CN=a, O=b" == "cn=a,O=b")."""
    parts = []
    for rdn in dn.split(","):
        key, sep, value = rdn.strip().partition("=")
        parts.append(f"{key.strip().upper()}{sep}{value.strip()}")
    return ",".join(parts)


def is_valid_ins(local_part: str) -> bool:
    """True if `local_part` is a NIR/INS matricule (15 characters, key checked)."""
    if len(local_part) != 15:
        return False
    try:
        nir.validate(local_part)
    except ValidationError:
        return False
    return True


@dataclass(frozen=True)
class TrustList:
    """Nom -> operator DNs, from one ANS publication."""

    domains: Mapping[str, frozenset[str]] = field(default_factory=dict)
    generated: str = ""  # DateDeGeneration as published (ISO 8601)
    entries: int = 0  # Domaine elements read (one per domain and operator DN)
    # 1-based positions of Domaine entries left out: Nom missing or not a domain name.
    skipped_entries: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.domains)

    def contains(self, domain: str) -> bool:
        """Exact match of a domain (case-insensitive); never a suffix rule."""
        return normalise_domain(domain) in self.domains

    def operator_dns(self, domain: str) -> frozenset[str]:
        return self.domains.get(normalise_domain(domain), frozenset())

    def is_mssante_address(self, address: str) -> bool:
        """True if the address's domain is listed; patient addresses need a valid INS."""
        local, at, domain = address.strip().rpartition("@")
        if not at or not local:
            return False
        domain = normalise_domain(domain)
        if domain not in self.domains:
            return False
        if domain == PATIENT_DOMAIN:
            return is_valid_ins(local)
        return True


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child_text(elem: Element, name: str) -> str | None:
    child = elem.find(f"{{{NAMESPACE}}}{name}")
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _complete_root(data: bytes) -> bytes:
    """Add the root close tag the ANS publication omits, only after a full ListeDomaines."""
    stripped = data.rstrip()
    if stripped.endswith(b"</ListeDomaines>") and _ROOT_CLOSE not in data[-200:]:
        return stripped + b"\n" + _ROOT_CLOSE + b"\n"
    return data


def parse_trust_list(data: bytes) -> TrustList:
    """Parse the ANS XML. Raises TrustListError naming what is wrong."""
    if len(data) > MAX_TRUST_LIST_BYTES:
        raise TrustListError(f"trust list larger than {MAX_TRUST_LIST_BYTES} bytes")
    if not data.strip():
        raise TrustListError("trust list is empty")
    try:
        root = fromstring(_complete_root(data), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise TrustListError(f"trust list refused: {type(exc).__name__}") from exc
    except ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        raise TrustListError(
            f"trust list is not well-formed XML (line {line}, column {col})"
        ) from exc
    if root.tag != f"{{{NAMESPACE}}}ListeBlancheMSSante":
        raise TrustListError(
            f"trust list root is {_local(root.tag)!r}, expected ListeBlancheMSSante "
            f"in namespace {NAMESPACE}"
        )
    generated = _child_text(root, "DateDeGeneration") or ""
    listing = root.find(f"{{{NAMESPACE}}}ListeDomaines")
    if listing is None:
        raise TrustListError("trust list has no ListeDomaines element")
    index: dict[str, set[str]] = {}
    count = 0
    skipped: list[int] = []
    for i, entry in enumerate(listing):
        if entry.tag != f"{{{NAMESPACE}}}Domaine":
            raise TrustListError(
                f"trust list entry {i + 1}: unexpected element {_local(entry.tag)!r}"
            )
        count += 1
        domain = normalise_domain(_child_text(entry, "Nom") or "")
        if len(domain) > MAX_DOMAIN_LENGTH or not _DOMAIN_RE.match(domain):
            # One bad entry must not take the whole list down (the 13 March 2025
            # publication has a Nom "sessad@ase.ditepbeziers.mssante.fr"); it is left
            # out, so that name matches nothing, and reported.
            skipped.append(i + 1)
            continue
        dn = _child_text(entry, "DNCertificatOperateur") or ""
        index.setdefault(domain, set())
        if dn:
            index[domain].add(dn)
    if count == 0:
        raise TrustListError("trust list has no Domaine entries")
    if not index:
        raise TrustListError("trust list has no valid domain name in any Domaine entry")
    return TrustList(
        domains={d: frozenset(dns) for d, dns in index.items()},
        generated=generated,
        entries=count,
        skipped_entries=tuple(skipped),
    )


def load_trust_list(path: str | Path) -> TrustList:
    """Read and parse the trust list file at `path`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_TRUST_LIST_BYTES + 1)
    except OSError as exc:
        raise TrustListError(f"trust list {p}: cannot read: {exc.strerror}") from exc
    try:
        return parse_trust_list(data)
    except TrustListError as exc:
        raise TrustListError(f"trust list {p}: {exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trustlist-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def fetch_trust_list(
    url: str,
    path: str | Path,
    *,
    ca_file: str = "",
    http_timeout: float = 60.0,
    transport: Any = None,
) -> TrustList:
    """Download the list over HTTPS, parse it, then replace the file at `path`.

    On any failure (network, TLS, HTTP status, malformed XML) raises TrustListError
    and leaves `path` untouched: the last good copy stays. The server is verified
    against `ca_file` (the IGC-Santé chain in production) or, without it, the
    system trust store.
    """
    import ssl

    import httpx

    from crypto.tls import verified_client_context

    if not url.startswith("https://"):
        raise TrustListError("trust list URL must be https://")
    try:
        verify = verified_client_context(ca_file) if ca_file else ssl.create_default_context()
    except PortiqueError as exc:
        raise TrustListError(f"trust list download: {exc}") from exc
    try:
        async with httpx.AsyncClient(
            verify=verify, timeout=http_timeout, transport=transport, follow_redirects=False
        ) as client:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise TrustListError(f"trust list download: HTTP {resp.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_TRUST_LIST_BYTES:
                        raise TrustListError(
                            f"trust list download larger than {MAX_TRUST_LIST_BYTES} bytes"
                        )
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise TrustListError(f"trust list download failed: {type(exc).__name__}") from exc
    data = b"".join(chunks)
    trust = parse_trust_list(data)
    _write_atomically(Path(path), data)
    return trust


class TrustListSource:
    """The current trust list, with refresh from a URL keeping the last good copy.

    `current` is always a list that parsed; a failed refresh leaves it (and the file)
    as they were and records `last_error` (PHI-free: the list holds no patient data).
    """

    def __init__(
        self, path: str | Path, url: str = "", *, ca_file: str = "", timeout: float = 60.0
    ) -> None:
        self.path = Path(path)
        self.url = url
        self.ca_file = ca_file
        self.timeout = timeout
        self.last_error = ""
        self.current = load_trust_list(self.path)

    def is_mssante_address(self, address: str) -> bool:
        return self.current.is_mssante_address(address)

    def contains(self, domain: str) -> bool:
        return self.current.contains(domain)

    async def refresh(self, transport: Any = None) -> bool:
        """Fetch a new copy; True if replaced. Failures keep the last good copy."""
        if not self.url:
            return False
        try:
            self.current = await fetch_trust_list(
                self.url,
                self.path,
                ca_file=self.ca_file,
                http_timeout=self.timeout,
                transport=transport,
            )
        except TrustListError as exc:
            self.last_error = str(exc)
            return False
        self.last_error = ""
        return True
