"""Lab HTTPS connector: POST a pseudonymised copy and its files to a lab's upload API.

Trust boundary: the copy handed to this connector is already transformed by the
pipeline for this lab (its own tokens); this module never sees original content and
does not transform. The lab endpoint is verified with TLS against `ca_file` (or the
system store when `ca_file` is empty); authentication is a bearer token and/or a
client certificate (PEM or PKCS#12). Nothing the lab returns is copied into details
beyond the HTTP status code.

Upload formats (`upload_format`):
- `multipart`: multipart/form-data with fields `queue_id`, `sender`, `recipients`, the
  whole message as `message` (message/rfc822, `message.eml`) and every attachment as
  a `files` part with its (already pseudonymised) file name and content type.
- `manifest`: multipart/form-data whose first part `manifest` is a JSON document
  (queue id, sender, recipients, and for each file its form field, name, type, size
  and SHA-256), followed by `message` and `file1`..`fileN`. The lab can check it got
  every file intact.

Outcomes: 2xx delivered; 408, 425, 429 and 5xx, timeouts, refused connections and TLS
failures TEMPFAIL (the queue retries with backoff); other 4xx and 3xx (redirects are
not followed: a redirect could lead the copy elsewhere) PERMFAIL. An
`Idempotency-Key: <queue_id>` header lets the lab drop a retry it already has.
Foreign exceptions never escape `deliver`.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.base import DeliveryItem, DeliveryResult, Status
from crypto.tls import load_client_identity, load_identity_into, verified_client_context
from gateway.config import ConnectorConfig
from gateway.errors import ConfigError, PortiqueError

UPLOAD_FORMATS = ("multipart", "manifest")
# One case rarely carries more than a few scans and photos; 1,000 files bounds the form.
MAX_FILES = 1000
# File names: 255 bytes is the usual filesystem limit on the lab side.
MAX_FILENAME = 255
RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class UploadFile:
    field: str
    filename: str
    content_type: str
    content: bytes


def safe_filename(name: str | None, index: int) -> str:
    """Base name only, no control characters; a numbered default when absent."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '"')
    base = base.strip(" .")[:MAX_FILENAME]
    return base or f"file{index}.bin"


def extract_files(data: bytes) -> list[UploadFile]:
    """The attachments of a message, in order. Raises ValueError beyond MAX_FILES."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    files: list[UploadFile] = []
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default gives EmailMessage
        return files
    for part in msg.iter_attachments() if msg.is_multipart() else ():
        for leaf in part.walk() if part.is_multipart() else (part,):
            if leaf.is_multipart():
                continue
            payload = leaf.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            if len(files) >= MAX_FILES:
                raise ValueError(f"more than {MAX_FILES} files")
            n = len(files) + 1
            files.append(
                UploadFile(
                    field="files",
                    filename=safe_filename(leaf.get_filename(), n),
                    content_type=leaf.get_content_type(),
                    content=payload,
                )
            )
    return files


def status_outcome(code: int) -> Status:
    if 200 <= code < 300:
        return Status.DELIVERED
    if code >= 500 or code in RETRYABLE_STATUS:
        return Status.TEMPFAIL
    return Status.PERMFAIL


def describe_http_failure(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "lab endpoint timed out"
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return f"TLS: lab certificate refused ({cur.verify_message or 'verification failed'})"
        if isinstance(cur, ssl.SSLError):
            return f"TLS handshake with the lab failed ({cur.reason or type(cur).__name__})"
        cur = cur.__cause__ or cur.__context__
    if isinstance(exc, httpx.ConnectError):
        return "lab endpoint unreachable"
    return f"lab upload failed ({type(exc).__name__})"


class LabHttpsConnector:
    """Uploads copies to one lab endpoint. See the module docstring."""

    def __init__(
        self, cfg: ConnectorConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not cfg.url.startswith("https://"):
            raise ConfigError(f"connectors.{cfg.name}.url: a lab upload URL must be https://")
        if cfg.upload_format not in UPLOAD_FORMATS:
            raise ConfigError(
                f"connectors.{cfg.name}.upload_format: expected multipart or manifest"
            )
        self.name = cfg.name
        self.cfg = cfg
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def destination(self, item: DeliveryItem) -> str:
        return f"lab_https:{urlsplit(self.cfg.url).netloc}"

    def _ssl_context(self) -> ssl.SSLContext:
        cfg = self.cfg
        identity = (
            load_client_identity(cfg.client_cert, cfg.client_key, cfg.client_cert_password)
            if cfg.client_cert
            else None
        )
        if cfg.ca_file:
            return verified_client_context(
                cfg.ca_file, identity=identity, min_version=cfg.tls_min_version or "TLSv1.2"
            )
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if identity is not None:
            load_identity_into(ctx, identity)
        return ctx

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._ssl_context(),
                timeout=self.cfg.timeout,
                follow_redirects=False,
                transport=self._transport,
            )
        return self._client

    def build_request_parts(
        self, item: DeliveryItem
    ) -> tuple[dict[str, str], list[tuple[str, Any]]]:
        """Form fields and file parts for one upload."""
        attachments = extract_files(item.data)
        message_part = UploadFile("message", "message.eml", "message/rfc822", item.data)
        if self.cfg.upload_format == "multipart":
            fields = {
                "queue_id": item.queue_id,
                "sender": item.mail_from,
                "recipients": ",".join(item.recipients),
            }
            parts = [message_part, *attachments]
            return fields, [(p.field, (p.filename, p.content, p.content_type)) for p in parts]
        numbered = [
            UploadFile(f"file{i}", f.filename, f.content_type, f.content)
            for i, f in enumerate(attachments, start=1)
        ]
        manifest = {
            "queue_id": item.queue_id,
            "sender": item.mail_from,
            "recipients": list(item.recipients),
            "files": [
                {
                    "field": f.field,
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "size": len(f.content),
                    "sha256": hashlib.sha256(f.content).hexdigest(),
                }
                for f in (message_part, *numbered)
            ],
        }
        manifest_bytes = json.dumps(manifest, ensure_ascii=False).encode()
        parts = [UploadFile("manifest", "manifest.json", "application/json", manifest_bytes)]
        parts += [message_part, *numbered]
        return {}, [(p.field, (p.filename, p.content, p.content_type)) for p in parts]

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        try:
            fields, files = self.build_request_parts(item)
        except (ValueError, LookupError) as exc:  # malformed copy: retrying will not help
            return DeliveryResult.all(
                item.recipients, Status.PERMFAIL, f"copy cannot be uploaded ({type(exc).__name__})"
            )
        headers = {"Idempotency-Key": item.queue_id, "User-Agent": "Portique"}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        try:
            client = self._get_client()
            resp = await client.post(self.cfg.url, data=fields, files=files, headers=headers)
        except PortiqueError as exc:  # client certificate / CA file problems: fix and retry
            return DeliveryResult.all(item.recipients, Status.TEMPFAIL, str(exc))
        except Exception as exc:  # foreign exceptions never escape a connector
            return DeliveryResult.all(item.recipients, Status.TEMPFAIL, describe_http_failure(exc))
        status = status_outcome(resp.status_code)
        return DeliveryResult.all(item.recipients, status, f"HTTP {resp.status_code} from lab")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
