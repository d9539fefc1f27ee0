"""MSSanté connector: SMTP submission to the practice's MSSanté operator over mutual TLS.

Trust boundary: the operator is reached only over TLS verified against `ca_file`
(IGC-Santé in production) with host-name check, presenting the practice's client
certificate (PEM pair or PKCS#12). Everything the operator says is untrusted: its
reply text is never copied into details (only the reply code and enhanced code).

Invariants (reliability promise 12, architecture invariant 6):
- Never plaintext, never unverified, never another route. If STARTTLS is not
  offered, the handshake fails, the certificate is expired or revoked, or the client
  certificate is missing or expired: TEMPFAIL with a PHI-free reason and nothing
  sent. The queue keeps the message; this connector never re-routes it.
- Only recipients whose domain is on the ANS trust list are sent (exact match);
  `<INS>@patient.mssante.fr` only with a valid NIR/INS key. Others: PERMFAIL (the
  router should never send them here; this is the defensive check).
- Every message gets `X-MSS-NIL` from config (any X-MSS-NIL already present is
  replaced). X-MSS-CODECDA (the CDA header `code`, comma-separated when several
  documents: the multi-value form is our reading of ECO.2.4.1) and X-MSS-INS (`O`
  when a CDA identifies the patient by INS-NIR, else `N`) are added only when an
  IHE_XDM.ZIP attachment carries CDA documents and the sender did not set them.
- Optional Annuaire Santé check (gateway/annuaire.py, off unless annuaire_api_key is
  set): an address the directory answers "not found" for is PERMFAIL; when the
  directory cannot answer, the trust list alone decides.
- Foreign exceptions never escape `deliver`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
import time
from collections.abc import Callable, Iterable
from xml.etree.ElementTree import ParseError

import aiosmtplib

from connectors.base import DeliveryItem, DeliveryResult, RecipientResult, Status
from crypto.tls import (
    ClientIdentity,
    CrlStore,
    load_client_identity,
    mssante_context,
    parse_tls_version,
)
from gateway.annuaire import DEFAULT_URL as ANNUAIRE_URL
from gateway.annuaire import AnnuaireClient
from gateway.config import ConnectorConfig
from gateway.errors import ConfigError, PortiqueError, TrustListError
from gateway.trustlist import PATIENT_DOMAIN, TrustListSource, is_valid_ins, normalise_domain

# ENS MES v1.3 (via the shared doc): Mon Espace Santé refuses messages over 25 Mo.
PATIENT_MAX_MESSAGE_BYTES = 25 * 1000 * 1000
# X-MSS-NIL is a product reference; a header line stays within RFC 5322's 998 octets.
MAX_NIL_LENGTH = 200
_ENHANCED = re.compile(r"^\d\.\d{1,3}\.\d{1,3}")
# IHE_XDM inspection for X-MSS-CODECDA / X-MSS-INS (Réf#2 ECO.2.4.1-2). Limits bound
# the work on a zip we did not build: an XDM archive holds a few documents.
XDM_MAX_ENTRIES = 200  # entries in one IHE_XDM.ZIP
XDM_MAX_DOCUMENT_BYTES = 20 * 1000 * 1000  # one CDA document, uncompressed
XDM_MAX_TOTAL_BYTES = 100 * 1000 * 1000  # all XML read from one archive
HL7_NS = "urn:hl7-org:v3"
# INS-NIR OIDs (CI-SIS): production, test and demonstration identities.
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})
_CODE_VALUE = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")


def smtp_detail(code: int, message: str, where: str = "operator") -> str:
    """'550 5.1.1 from operator': the code and enhanced code only, never peer text."""
    match = _ENHANCED.match(message.strip())
    enhanced = f" {match.group(0)}" if match else ""
    return f"{code}{enhanced} from {where}"


def status_for_code(code: int) -> Status:
    return Status.PERMFAIL if 500 <= code < 600 else Status.TEMPFAIL


def set_header(data: bytes, name: str, value: str) -> bytes:
    """Replace every `name:` header (with folded lines) by one `name: value`, put first."""
    if "\r" in value or "\n" in value or not value.isascii():
        raise ValueError(f"{name}: header value must be one line of ASCII")
    sep = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
    head, blank, body = data.partition(sep + sep)
    if not blank:  # no body: the whole message is headers
        head, body = data, b""
    pattern = re.compile(rb"^" + re.escape(name.lower().encode()) + rb":", re.IGNORECASE)
    kept: list[bytes] = []
    skipping = False
    for line in head.split(sep):
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = bool(pattern.match(line))
        if not skipping:
            kept.append(line)
    new_head = sep.join([f"{name}: {value}".encode(), *kept])
    return new_head + sep + sep + body if blank else new_head + sep


def _cda_facts(xml: bytes) -> tuple[str, bool] | None:
    """(CDA header code, has an INS-NIR patient id) of a ClinicalDocument, else None."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(xml, forbid_dtd=True)
    except (DefusedXmlException, ParseError):
        return None
    if root.tag != f"{{{HL7_NS}}}ClinicalDocument":
        return None
    code_el = root.find(f"{{{HL7_NS}}}code")
    code = (code_el.get("code") or "") if code_el is not None else ""
    ids = root.iterfind(f"{{{HL7_NS}}}recordTarget/{{{HL7_NS}}}patientRole/{{{HL7_NS}}}id")
    has_ins = any(el.get("root") in INS_OIDS and el.get("extension") for el in ids)
    return (code if _CODE_VALUE.match(code) else ""), has_ins


def cda_documents(data: bytes) -> list[tuple[str, bool]]:
    """(code, has INS) for every CDA inside IHE_XDM.ZIP attachments of a message.

    Untrusted input, bounded by the XDM_* limits; anything unreadable is skipped
    (the headers are informative; leaving them out sends nothing more).
    """
    import email
    import email.policy
    import io
    import zipfile

    msg = email.message_from_bytes(data, policy=email.policy.default)
    found: list[tuple[str, bool]] = []
    for part in msg.walk():
        name = (part.get_filename() or "").strip().upper()
        if part.is_multipart() or not name.endswith("IHE_XDM.ZIP"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                infos = archive.infolist()
                if len(infos) > XDM_MAX_ENTRIES:
                    continue
                budget = XDM_MAX_TOTAL_BYTES
                for info in infos:
                    base = info.filename.rsplit("/", 1)[-1].upper()
                    if not base.endswith(".XML") or base == "METADATA.XML":
                        continue
                    if info.file_size > XDM_MAX_DOCUMENT_BYTES or info.file_size > budget:
                        continue
                    with archive.open(info) as fh:
                        xml = fh.read(XDM_MAX_DOCUMENT_BYTES + 1)
                    budget -= len(xml)
                    if len(xml) > XDM_MAX_DOCUMENT_BYTES:
                        continue
                    facts = _cda_facts(xml)
                    if facts is not None:
                        found.append(facts)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError):
            continue
    return found


def add_cda_headers(data: bytes) -> bytes:
    """X-MSS-CODECDA (codes, comma-separated when several) and X-MSS-INS (O/N), only
    when an IHE_XDM archive carries CDA documents and the sender did not set them."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    has_codecda = re.search(rb"(^|\n)x-mss-codecda:", head) is not None
    has_ins = re.search(rb"(^|\n)x-mss-ins:", head) is not None
    if has_codecda and has_ins:
        return data
    try:
        documents = cda_documents(data)
    except Exception:  # malformed MIME: informative headers are simply not added
        return data
    if not documents:
        return data
    codes = list(dict.fromkeys(code for code, _ in documents if code))
    if not has_ins:
        data = set_header(data, "X-MSS-INS", "O" if any(i for _, i in documents) else "N")
    if codes and not has_codecda:
        data = set_header(data, "X-MSS-CODECDA", ",".join(codes))
    return data


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def describe_failure(exc: BaseException, *, during_handshake: bool = False) -> str:
    """A PHI-free reason for a failed connection (TLS, network, timeout)."""
    verify = _find_cause(exc, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        why = verify.verify_message or "verification failed"
        return f"TLS: operator certificate refused ({why}); nothing sent"
    tls = _find_cause(exc, ssl.SSLError)
    if isinstance(tls, ssl.SSLError):
        return f"TLS handshake failed ({tls.reason or type(tls).__name__}); nothing sent"
    if during_handshake:
        return "TLS handshake failed (operator closed the connection); nothing sent"
    if _find_cause(exc, TimeoutError) or isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return "operator timed out"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "operator closed the connection (client certificate refused?)"
    conn = _find_cause(exc, ConnectionRefusedError)
    if conn is not None:
        return "operator unreachable (connection refused)"
    if isinstance(exc, aiosmtplib.SMTPConnectError) or _find_cause(exc, OSError):
        return "operator unreachable"
    return f"delivery failed ({type(exc).__name__})"


class MSSanteConnector:
    """Submits copies to the MSSanté operator; see the module docstring for the rules."""

    def __init__(
        self,
        cfg: ConnectorConfig,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        annuaire: AnnuaireClient | None = None,
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        # A wrong TLS policy is a configuration error at start, not a deferral per message.
        parse_tls_version(
            cfg.tls_min_version or "TLSv1.2", f"connectors.{cfg.name}.tls_min_version"
        )
        if cfg.tls_max_version:
            parse_tls_version(cfg.tls_max_version, f"connectors.{cfg.name}.tls_max_version")
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.trust: TrustListSource | None = None
        self.trust_error = ""
        self._trust_checked = time.monotonic()
        try:
            self.trust = TrustListSource(cfg.trust_list, cfg.trust_list_url, ca_file=cfg.ca_file)
        except TrustListError as exc:
            self.trust_error = str(exc)
        self.crl: CrlStore | None = None
        self.crl_error = ""
        self._crl_checked = 0.0
        try:
            self.crl = CrlStore(cfg.ca_file, cfg.crl_file, cfg.crl_url)
        except ConfigError as exc:
            self.crl_error = str(exc)
        self.annuaire = annuaire
        if annuaire is None and cfg.annuaire_api_key:
            self.annuaire = AnnuaireClient(
                cfg.annuaire_api_key, cfg.annuaire_url or ANNUAIRE_URL, http_timeout=cfg.timeout
            )
        if cfg.nil and (len(cfg.nil) > MAX_NIL_LENGTH or "\n" in cfg.nil or "\r" in cfg.nil):
            raise ConfigError(
                f"connectors.{cfg.name}.nil: one line of at most {MAX_NIL_LENGTH} characters"
            )

    # --- introspection for check-config and metrics ---------------------------------

    def client_identity(self) -> ClientIdentity:
        return load_client_identity(
            self.cfg.client_cert, self.cfg.client_key, self.cfg.client_cert_password
        )

    def client_cert_not_after(self) -> dt.datetime:
        """Expiry of the client certificate (UTC). ConfigError if it cannot be read."""
        return self.client_identity().not_after

    def destination(self, item: DeliveryItem) -> str:
        return f"mssante:{self.cfg.host}:{self.cfg.port}"

    async def close(self) -> None:
        if self.annuaire is not None:
            await self.annuaire.close()

    # --- recipient policy -------------------------------------------------------------

    def refusal(self, recipient: str) -> str:
        """Why `recipient` may not be sent through MSSanté, or "" if it may."""
        if self.trust is None:
            return "MSSanté trust list unavailable"
        local, _, domain = recipient.rpartition("@")
        domain = normalise_domain(domain)
        if not self.trust.contains(domain):
            return "not on the MSSanté trust list"
        if domain == PATIENT_DOMAIN and not is_valid_ins(local):
            return "patient address is not a valid INS"
        return ""

    async def _refresh_lists(self) -> None:
        now = time.monotonic()
        if self.trust is not None and self.trust.url:
            if now - self._trust_checked >= self.cfg.trust_list_refresh:
                self._trust_checked = now
                await self.trust.refresh()
        if self.crl is not None and self.crl.crl_url:
            due = self.crl.crl is None or now - self._crl_checked >= self.cfg.crl_refresh
            if due:
                self._crl_checked = now
                await self.crl.refresh(http_timeout=self.cfg.timeout)

    def _context(self) -> ssl.SSLContext:
        identity = self.client_identity()
        if identity.not_after <= self._clock():
            raise _Defer("client certificate expired; renew it (check-config shows the date)")
        crl_pem = None
        if self.crl is not None and self.crl.configured:
            crl_pem = self.crl.pem()
            if crl_pem is None:
                raise _Defer(f"no valid revocation list ({self.crl.last_error or 'not loaded'})")
        return mssante_context(
            self.cfg.ca_file,
            identity,
            min_version=self.cfg.tls_min_version,
            max_version=self.cfg.tls_max_version,
            ciphers=self.cfg.ciphers,
            crl_pem=crl_pem,
        )

    # --- delivery ---------------------------------------------------------------------

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        try:
            return await self._deliver(item)
        except _Defer as exc:
            return DeliveryResult.all(item.recipients, Status.TEMPFAIL, str(exc))
        except PortiqueError as exc:  # ConfigError etc.: messages name keys/files, no PHI
            return DeliveryResult.all(item.recipients, Status.TEMPFAIL, str(exc))
        except Exception as exc:  # foreign exceptions never escape a connector
            return DeliveryResult.all(item.recipients, Status.TEMPFAIL, describe_failure(exc))

    async def _deliver(self, item: DeliveryItem) -> DeliveryResult:
        if self.trust is None:
            raise _Defer(f"trust list unavailable: {self.trust_error}")
        if self.crl_error:
            raise _Defer(f"revocation list unavailable: {self.crl_error}")
        await self._refresh_lists()
        results: dict[str, RecipientResult] = {}
        allowed: list[str] = []
        for rcpt in item.recipients:
            why = self.refusal(rcpt)
            if why:
                results[rcpt] = RecipientResult(rcpt, Status.PERMFAIL, why)
            else:
                allowed.append(rcpt)
        if self.annuaire is not None:
            for rcpt in list(allowed):
                if await self.annuaire.mailbox_known(rcpt) is False:
                    results[rcpt] = RecipientResult(
                        rcpt, Status.PERMFAIL, "not found in the Annuaire Santé"
                    )
                    allowed.remove(rcpt)
        data = set_header(item.data, "X-MSS-NIL", self.cfg.nil) if self.cfg.nil else item.data
        if b"IHE_XDM" in data.upper():
            # Parsing a large message would block the event loop: do it in a thread.
            data = await asyncio.to_thread(add_cda_headers, data)
        for rcpt in list(allowed):
            if _domain(rcpt) == PATIENT_DOMAIN and len(data) > PATIENT_MAX_MESSAGE_BYTES:
                results[rcpt] = RecipientResult(
                    rcpt, Status.PERMFAIL, "message over the 25 Mo limit of Mon Espace Santé"
                )
                allowed.remove(rcpt)
        if allowed:
            ctx = self._context()
            for r in await self._submit(item.mail_from, allowed, data, ctx):
                results[r.recipient] = r
        return DeliveryResult(tuple(results[r] for r in item.recipients))

    async def _submit(
        self, mail_from: str, recipients: list[str], data: bytes, ctx: ssl.SSLContext
    ) -> Iterable[RecipientResult]:
        cfg = self.cfg
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port or (465 if cfg.implicit_tls else 587),
            use_tls=cfg.implicit_tls,
            start_tls=False,
            tls_context=ctx,
            timeout=cfg.timeout,
            local_hostname=cfg.helo_name or None,
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
            if not cfg.implicit_tls:
                if not smtp.supports_extension("starttls"):
                    raise _Defer("operator did not offer STARTTLS; nothing sent")
                try:
                    await smtp.starttls(tls_context=ctx, server_hostname=cfg.host)
                except Exception as exc:
                    raise _Defer(describe_failure(exc, during_handshake=True)) from exc
                await smtp.ehlo()
            ssl_object = smtp.get_transport_info("ssl_object")
            if ssl_object is None:  # defensive: never send without TLS
                raise _Defer("no TLS session with the operator; nothing sent")
            if cfg.username:
                # Operators that want SASL after the mutual-TLS handshake (shared doc 8.4).
                if not smtp.supports_extension("auth"):
                    raise _Defer("operator did not offer AUTH; nothing sent")
                try:
                    await smtp.login(cfg.username, cfg.password)
                except aiosmtplib.SMTPAuthenticationError as exc:
                    # A credentials problem: keep the message queued while it is fixed.
                    raise _Defer(
                        f"operator refused authentication ({smtp_detail(exc.code, exc.message)})"
                    ) from exc
            size_limit = _size_limit(smtp.esmtp_extensions.get("size", ""))
            if size_limit and len(data) > size_limit:
                return [
                    RecipientResult(r, Status.PERMFAIL, "message larger than the operator accepts")
                    for r in recipients
                ]
            return await self._transaction(smtp, mail_from, recipients, data)
        finally:
            await _quit_or_close(smtp)

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, mail_from: str, recipients: list[str], data: bytes
    ) -> list[RecipientResult]:
        try:
            await smtp.mail(mail_from)
        except aiosmtplib.SMTPResponseException as exc:
            detail = smtp_detail(exc.code, exc.message)
            return [RecipientResult(r, status_for_code(exc.code), detail) for r in recipients]
        accepted: list[str] = []
        out: list[RecipientResult] = []
        for rcpt in recipients:
            try:
                await smtp.rcpt(rcpt)
                accepted.append(rcpt)
            except aiosmtplib.SMTPResponseException as exc:
                out.append(
                    RecipientResult(
                        rcpt, status_for_code(exc.code), smtp_detail(exc.code, exc.message)
                    )
                )
        if not accepted:
            await smtp.rset()
            return out
        try:
            resp = await smtp.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            detail = smtp_detail(exc.code, exc.message)
            return out + [RecipientResult(r, status_for_code(exc.code), detail) for r in accepted]
        detail = smtp_detail(resp.code, resp.message)
        return out + [RecipientResult(r, Status.DELIVERED, detail) for r in accepted]


class _Defer(Exception):
    """Internal: stop before sending; the message stays queued with this reason."""


def _domain(address: str) -> str:
    return normalise_domain(address.rpartition("@")[2])


def _size_limit(value: str) -> int:
    value = value.strip()
    return int(value) if value.isdigit() else 0


def client_cert_expiry(cfg: ConnectorConfig) -> dt.datetime:
    """For check-config: the expiry of an MSSanté connector's client certificate."""
    return load_client_identity(cfg.client_cert, cfg.client_key, cfg.client_cert_password).not_after


__all__ = ["MSSanteConnector", "client_cert_expiry", "set_header", "smtp_detail"]


async def _quit_or_close(smtp: aiosmtplib.SMTP) -> None:
    """QUIT politely; whatever happens (an error, a cancellation during QUIT), the
    connection is closed before this returns or re-raises."""
    try:
        if smtp.is_connected:
            await smtp.quit()
    except Exception:  # noqa: S110 - the connection is closed below either way
        pass
    finally:
        smtp.close()
