"""TLS client context policies for outbound connectors (MSSanté, lab HTTPS, downloads).

Trust boundary: the peer (an MSSanté operator, a lab's HTTPS endpoint) is verified
against the CA bundle given in config only; the system trust store is never added,
because IGC-Santé roots are not in it and a public CA must not vouch for an operator.

Invariants:
- Every context verifies the peer (CERT_REQUIRED) and its host name. There is no
  switch to turn that off.
- MSSanté policy (shared doc section 8 / Réf#2 ECO.1.1.2-1.1.3): TLS 1.2 minimum; the
  TLS 1.2 cipher suites default to the four the Référentiel lists; both are
  configurable (`tls_min_version`, `tls_max_version`, `ciphers`).
- Client identity comes from PEM (cert + key) or PKCS#12 (.p12/.pfx + password). The
  PKCS#12 content is handed to OpenSSL through an anonymous in-memory file (memfd),
  falling back to a 0600 temporary file deleted at once; it is never left on disk.
- Revocation (ECO.1.1.6-1.1.7): a CRL is accepted only if it parses, is signed by a
  CA of the bundle and is not past its nextUpdate; `CrlStore` keeps the last good one
  (memory and disk) when a refresh fails. With a CRL loaded, OpenSSL checks the leaf
  (VERIFY_CRL_CHECK_LEAF): a revoked peer fails the handshake.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.errors import ConfigError

# Réf#2 ECO.1.1.3: the only TLS 1.2 suites an MSSanté client may offer.
ANS_CIPHERS = (
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256"
)
TLS_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
PKCS12_SUFFIXES = (".p12", ".pfx")
# A CRL of a national PKI can reach a few MB; 32 MiB refuses a runaway download.
MAX_CRL_BYTES = 32 * 1024 * 1024


def parse_tls_version(value: str, where: str = "tls_min_version") -> ssl.TLSVersion:
    """'TLSv1.2' or 'TLSv1.3'. Older versions are refused: they are never acceptable."""
    try:
        return TLS_VERSIONS[value]
    except KeyError:
        raise ConfigError(f"{where}: expected one of {', '.join(TLS_VERSIONS)}") from None


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate and key, as PEM, with the certificate's expiry."""

    cert_pem: bytes
    key_pem: bytes
    not_after: dt.datetime

    def __repr__(self) -> str:
        return f"ClientIdentity(not_after={self.not_after.isoformat()})"


def is_pkcs12_path(path: str) -> bool:
    return path.lower().endswith(PKCS12_SUFFIXES)


def load_client_identity(cert_path: str, key_path: str = "", password: str = "") -> ClientIdentity:
    """Read a PEM pair or a PKCS#12 bundle. Errors name the file, never key material."""
    try:
        raw = Path(cert_path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"client_cert {cert_path}: cannot read: {exc.strerror}") from exc
    if is_pkcs12_path(cert_path):
        try:
            key, cert, chain = pkcs12.load_key_and_certificates(
                raw, password.encode() if password else None
            )
        except ValueError as exc:
            raise ConfigError(
                f"client_cert {cert_path}: not a PKCS#12 bundle, or wrong client_cert_password"
            ) from exc
        if key is None or cert is None:
            raise ConfigError(f"client_cert {cert_path}: PKCS#12 bundle lacks a key or certificate")
        cert_pem = cert.public_bytes(serialization.Encoding.PEM) + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in chain
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return ClientIdentity(cert_pem, key_pem, cert.not_valid_after_utc)
    if not key_path:
        raise ConfigError(f"client_key: required with the PEM certificate {cert_path}")
    try:
        key_raw = Path(key_path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"client_key {key_path}: cannot read: {exc.strerror}") from exc
    try:
        cert = x509.load_pem_x509_certificate(raw)
    except ValueError as exc:
        raise ConfigError(f"client_cert {cert_path}: not a PEM certificate") from exc
    try:
        serialization.load_pem_private_key(key_raw, password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"client_key {key_path}: not a PEM private key, or wrong password"
        ) from exc
    return ClientIdentity(raw, key_raw, cert.not_valid_after_utc)


@contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read holding `data`, gone when the block ends."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("portique-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix="portique-tls-")  # pragma: no cover - non-Linux
    try:  # pragma: no cover
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield name
    finally:  # pragma: no cover
        os.unlink(name)


def load_identity_into(ctx: ssl.SSLContext, identity: ClientIdentity) -> None:
    """Present `identity` as the client certificate of `ctx`."""
    with _private_file(identity.cert_pem) as cert, _private_file(identity.key_pem) as key:
        ctx.load_cert_chain(cert, key)


def verified_client_context(
    ca_file: str,
    *,
    identity: ClientIdentity | None = None,
    min_version: str = "TLSv1.2",
    max_version: str = "",
    ciphers: str = "",
    crl_pem: bytes | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the peer against `ca_file` only."""
    if not ca_file:
        raise ConfigError("ca_file: a CA bundle is required to verify the peer")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = parse_tls_version(min_version, "tls_min_version")
    if max_version:
        ctx.maximum_version = parse_tls_version(max_version, "tls_max_version")
        if ctx.maximum_version < ctx.minimum_version:
            raise ConfigError("tls_max_version: lower than tls_min_version")
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise ConfigError("ciphers: no cipher suite in this list is available") from exc
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ca_file {ca_file}: cannot load the CA bundle") from exc
    if crl_pem is not None:
        with _private_file(crl_pem) as crl:
            ctx.load_verify_locations(cafile=crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if identity is not None:
        load_identity_into(ctx, identity)
    return ctx


def mssante_context(
    ca_file: str,
    identity: ClientIdentity,
    *,
    min_version: str = "TLSv1.2",
    max_version: str = "",
    ciphers: str = "",
    crl_pem: bytes | None = None,
) -> ssl.SSLContext:
    """The MSSanté policy: client certificate required, ANS ciphers unless configured."""
    return verified_client_context(
        ca_file,
        identity=identity,
        min_version=min_version or "TLSv1.2",
        max_version=max_version,
        ciphers=ciphers or ANS_CIPHERS,
        crl_pem=crl_pem,
    )


# --- certificate revocation lists -----------------------------------------------------


def load_ca_bundle(ca_file: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"ca_file {ca_file}: cannot load the CA bundle") from exc


def check_crl(
    data: bytes, issuers: list[x509.Certificate], now: dt.datetime | None = None
) -> x509.CertificateRevocationList:
    """Parse a PEM or DER CRL and check its signature and freshness. ValueError if bad."""
    if len(data) > MAX_CRL_BYTES:
        raise ValueError(f"CRL larger than {MAX_CRL_BYTES} bytes")
    if b"-----BEGIN X509 CRL" in data:
        crl = x509.load_pem_x509_crl(data)
    else:
        crl = x509.load_der_x509_crl(data)
    now = now or dt.datetime.now(dt.UTC)
    signer = next((c for c in issuers if c.subject == crl.issuer), None)
    if signer is None:
        raise ValueError("CRL issuer is not in the CA bundle")
    public_key = signer.public_key()
    if not crl.is_signature_valid(public_key):  # type: ignore[arg-type]
        raise ValueError("CRL signature does not verify")
    next_update = crl.next_update_utc
    if next_update is not None and next_update < now:
        raise ValueError("CRL is past its nextUpdate")
    return crl


class CrlStore:
    """The last good CRL for one CA bundle, from a file and optionally a URL.

    `crl_file` is both the configured source and, with `crl_url`, where a newer good
    copy is written. `pem()` returns the CRL to load into the TLS context, or None
    when revocation checking is not configured.
    """

    def __init__(self, ca_file: str, crl_file: str = "", crl_url: str = "") -> None:
        self.ca_file = ca_file
        self.crl_file = crl_file
        self.crl_url = crl_url
        self.last_error = ""
        self._crl: x509.CertificateRevocationList | None = None
        if crl_file and Path(crl_file).exists():
            self.load_file()
        elif crl_file and not crl_url:
            raise ConfigError(f"crl_file {crl_file}: cannot read: file not found")

    @property
    def configured(self) -> bool:
        return bool(self.crl_file or self.crl_url)

    @property
    def crl(self) -> x509.CertificateRevocationList | None:
        return self._crl

    def load_file(self) -> None:
        try:
            data = Path(self.crl_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"crl_file {self.crl_file}: cannot read: {exc.strerror}") from exc
        self.accept(data)

    def accept(self, data: bytes) -> bool:
        """Install `data` if it is a good CRL; otherwise keep the previous one."""
        try:
            crl = check_crl(data, load_ca_bundle(self.ca_file))
        except ValueError as exc:
            self.last_error = f"CRL refused: {exc}"
            return False
        self._crl = crl
        self.last_error = ""
        return True

    def pem(self) -> bytes | None:
        if self._crl is None:
            return None
        return self._crl.public_bytes(serialization.Encoding.PEM)

    def is_revoked(self, cert: x509.Certificate) -> bool:
        if self._crl is None:
            return False
        return self._crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

    async def refresh(self, *, http_timeout: float = 30.0) -> bool:
        """Fetch `crl_url` with httpx; a good CRL replaces the current one (and the file).

        CRLs are signed, so plain http:// (as PKIs publish them) is fine; an https://
        URL is verified against the same CA bundle.
        """
        if not self.crl_url:
            return False
        import httpx

        try:
            verify = verified_client_context(self.ca_file)
        except ConfigError as exc:
            self.last_error = str(exc)
            return False
        try:
            async with httpx.AsyncClient(verify=verify, timeout=http_timeout) as client:
                resp = await client.get(self.crl_url)
        except httpx.HTTPError as exc:
            self.last_error = f"CRL download failed: {type(exc).__name__}"
            return False
        if resp.status_code != 200:
            self.last_error = f"CRL download: HTTP {resp.status_code}"
            return False
        if not self.accept(resp.content):
            return False
        if self.crl_file:
            _write_file_atomically(Path(self.crl_file), resp.content)
        return True


def _write_file_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The verified peer's leaf certificate from an SSL object, or None."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None
