"""Typed, frozen configuration, validated once at start.

Input: one TOML file written by the operator (untrusted as to shape), or the embedded
defaults. Output: a `Config` tree of frozen dataclasses.

Invariants:
- Unknown keys are errors that name the key (`smtp.listn: unknown key`).
- Insecure combinations are errors (e.g. an MSSanté connector without a client
  certificate, a relay with `tls = "none"` to a non-loopback host).
- Relative paths are resolved against the config file's folder (or the working
  directory for the embedded defaults).
- No secret is ever printed: secret fields are masked in `repr`.

Each section is a dataclass; adding a key means adding a field with a default and a
comment giving its unit and reason. `load_config` walks the dataclass fields, so the
validation of names and types is written once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

MiB = 1024 * 1024


def _secret() -> Any:
    """A field whose value never appears in repr()."""
    return field(default="", repr=False)


@dataclass(frozen=True)
class SmtpUser:
    name: str
    # argon2id hash, as printed by `portique hash-password`.
    password_hash: str = field(default="", repr=False)


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:2525"
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    hostname: str = "portique.localdomain"
    # 50 MiB: a full-arch intra-oral scan as STL is 20-40 MB; MSSanté patient boxes cap at 25 Mo.
    max_message_size: int = 50 * MiB
    # RFC 5321 4.5.3.1.8 requires at least 100 recipients to be accepted.
    max_recipients: int = 100
    # RFC 5321 4.5.3.1.6: 1000 octets including CRLF; aiosmtpd counts 1001 with the CR.
    max_line_length: int = 1001
    # RFC 5321 4.5.3.2.7 suggests 5 minutes of server idle timeout.
    session_timeout: float = 300.0
    # Concurrent sessions per worker; a practice has tens of clients at most.
    max_sessions: int = 200
    # Budget for the reply to the final dot (spool write + fsync), in seconds.
    data_reply_budget: float = 30.0
    tls_cert: str = ""
    tls_key: str = ""
    users: tuple[SmtpUser, ...] = ()


@dataclass(frozen=True)
class SpoolConfig:
    # Group commit: concurrent DATA replies share one fsync within this window (milliseconds).
    group_commit_window_ms: float = 2.0
    # fsync before 250. Only benchmarks that measure the cost of it may turn it off.
    fsync: bool = True


@dataclass(frozen=True)
class QueueConfig:
    # Exponential backoff: first retry after 60 s, doubling, capped at 1 h (Postfix-like).
    retry_initial: float = 60.0
    retry_max: float = 3600.0
    retry_factor: float = 2.0
    # RFC 5321 4.5.4.1: give up after 4-5 days.
    give_up_after: float = 5 * 86400.0
    # Parallel deliveries to one destination (connector + host).
    per_destination_concurrency: int = 4
    # Delivery workers in all.
    max_deliveries: int = 32
    # How often the scheduler wakes to look for due entries, in seconds.
    poll_interval: float = 1.0


@dataclass(frozen=True)
class ConnectorConfig:
    """One `[connectors.NAME]` section. `type` defaults to NAME."""

    name: str
    type: str
    # relay / mssante: SMTP peer
    host: str = ""
    port: int = 0
    tls: str = "required"  # required | starttls-opportunistic | none (loopback tests only)
    ca_file: str = ""
    username: str = ""
    password: str = _secret()
    helo_name: str = ""
    timeout: float = 60.0
    # mssante
    client_cert: str = ""
    client_key: str = ""
    client_cert_password: str = _secret()
    trust_list: str = ""
    trust_list_url: str = ""
    trust_list_refresh: float = 86400.0
    crl_file: str = ""
    crl_url: str = ""
    tls_min_version: str = "TLSv1.2"
    # Réf#2 ECO.1.1.2 reads "TLS 1.2 only"; set "TLSv1.2" here to cap it. Empty: no cap.
    tls_max_version: str = ""
    # TLS 1.2 suites (OpenSSL names); empty: the four of Réf#2 ECO.1.1.3 (crypto/tls.py).
    ciphers: str = ""
    # mssante: TLS from the first byte (port 465 style) instead of STARTTLS on 587.
    implicit_tls: bool = False
    # mssante: seconds between CRL downloads from crl_url (IGC-Santé CRLs are daily).
    crl_refresh: float = 3600.0
    nil: str = ""
    annuaire_api_key: str = _secret()
    annuaire_url: str = ""
    # lab_https
    url: str = ""
    token: str = _secret()
    upload_format: str = "multipart"  # multipart | manifest
    # outbox
    path: str = ""
    # S/MIME encryption to a lab certificate (relay connector)
    smime_cert: str = ""


CONNECTOR_TYPES = ("relay", "mssante", "lab_https", "outbox")
TLS_MODES = ("required", "starttls-opportunistic", "none")
ROUTE_ACTIONS = (
    "deliver",
    "pseudonymise",
    "redact",
    "reject-if-phi",
    "hold",
    "reject",
    "own-data-only",
)
TYPE_ACTIONS = ("pseudonymise", "redact", "generalise", "remove", "keep")
UNKNOWN_FILE_ACTIONS = ("pass", "hold", "reject")


@dataclass(frozen=True)
class RouteConfig:
    name: str
    match: tuple[str, ...]
    action: str
    connector: str = ""
    # Per identifier type override, e.g. {"birth_date" = "generalise"}.
    overrides: Mapping[str, str] = field(default_factory=dict)
    # Files whose type no handler knows: pass | hold | reject. Empty: hold, except on deliver.
    unknown_files: str = ""


@dataclass(frozen=True)
class Practitioner:
    name: str
    rpps: str = ""


@dataclass(frozen=True)
class PracticeConfig:
    """The practice's own details: never patient identifiers."""

    name: str = ""
    addresses: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    practitioners: tuple[Practitioner, ...] = ()


@dataclass(frozen=True)
class ScanConfig:
    engine: str = "auto"  # auto | hyperscan | re
    # Per-message CPU budget for scanning and transforming, in seconds; beyond it: hold.
    message_budget: float = 60.0


@dataclass(frozen=True)
class FilesConfig:
    # ZIP limits (zip bombs): nesting depth, entries, total uncompressed bytes, ratio.
    zip_max_depth: int = 3
    zip_max_entries: int = 10_000
    zip_max_total_size: int = 512 * MiB
    zip_max_ratio: float = 200.0
    # MIME limits: nesting depth and part count of one message.
    mime_max_depth: int = 32
    mime_max_parts: int = 5_000


@dataclass(frozen=True)
class AuditConfig:
    # Signed checkpoint every N records (and at shutdown).
    checkpoint_every: int = 1000
    # Records older than this are pruned (days); 0 keeps everything.
    retention_days: int = 3650
    export_syslog: str = ""  # host:port (UDP)
    export_url: str = ""  # HTTPS endpoint receiving checkpoints as JSON
    export_email: str = ""  # daily checkpoint e-mail to this address


@dataclass(frozen=True)
class AdminConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:8025"
    tls_cert: str = ""
    tls_key: str = ""
    # Idle session timeout, seconds (ANSSI recommends short admin sessions).
    session_idle_timeout: float = 900.0
    # Failed logins allowed per user and per IP in `login_window` seconds.
    login_max_failures: int = 5
    login_window: float = 300.0
    alert_email: str = ""
    language: str = "fr"


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9125"


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("./portique-data")
    # Acceptor/pipeline processes: an integer or "auto" (one per core).
    workers: str = "1"
    # Seconds a worker may go without a heartbeat (its event loop stuck) before the
    # supervisor kills and restarts it (workers > 1 only).
    worker_hang_timeout: float = 30.0
    # With workers > 1 and no more workers than usable cores: worker N keeps to core N
    # (gateway/workers.py, `pin_to_core`). false: the kernel moves them freely.
    pin_workers: bool = True
    log_level: str = "info"
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    connectors: Mapping[str, ConnectorConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    practice: PracticeConfig = field(default_factory=PracticeConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Where this config came from, for messages; not a key.
    source: str = field(default="<embedded defaults>", compare=False)

    def path(self, value: str) -> Path:
        """Resolve a path from the config: relative to data_dir's base folder."""
        return resolve_path(value, self._base)

    @property
    def _base(self) -> Path:
        src = Path(self.source)
        return src.parent if src.is_file() else Path.cwd()

    def worker_count(self) -> int:
        import os

        if self.workers == "auto":
            return max(1, os.cpu_count() or 1)
        return int(self.workers)

    def effective_routes(self) -> tuple[RouteConfig, ...]:
        """The configured routes, or the single default route `*` -> reject-if-phi."""
        if self.routes:
            return self.routes
        connector = "relay" if "relay" in self.connectors else "outbox"
        return (
            RouteConfig(name="default", match=("*",), action="reject-if-phi", connector=connector),
        )

    def effective_connectors(self) -> Mapping[str, ConnectorConfig]:
        """Configured connectors, plus the embedded `outbox` when no relay is set."""
        if "relay" in self.connectors or "outbox" in self.connectors:
            return self.connectors
        outbox = ConnectorConfig(name="outbox", type="outbox", path=str(self.data_dir / "outbox"))
        return {**self.connectors, "outbox": outbox}


def resolve_path(value: str | Path, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


# --- generic dataclass builder --------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: invalid value type {type(value).__name__}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        _k, v_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return _build(tp, value, where)
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string")
        return Path(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string")
        if isinstance(value, int):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _build(cls: Any, table: Mapping[str, Any], where: str, **fixed: Any) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init} - {"source"}
    for key in table:
        if key not in names or key in fixed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}: unknown key")
    kwargs = dict(fixed)
    for key, value in table.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        raise ConfigError(f"{where}: missing key {', '.join(missing) or '?'}") from exc


def parse_config(data: Mapping[str, Any], source: str = "<embedded defaults>") -> Config:
    """Build and validate a Config from a parsed TOML mapping."""
    data = dict(data)
    raw_connectors = data.pop("connectors", {})
    raw_routes = data.pop("routes", [])
    if not isinstance(raw_connectors, dict):
        raise ConfigError("connectors: expected a table of [connectors.NAME] sections")
    if not isinstance(raw_routes, list):
        raise ConfigError("routes: expected [[routes]] entries")
    connectors: dict[str, ConnectorConfig] = {}
    for name, table in raw_connectors.items():
        if not isinstance(table, dict):
            raise ConfigError(f"connectors.{name}: expected a table")
        table = dict(table)
        ctype = table.pop("type", name)
        connectors[name] = _build(
            ConnectorConfig, table, f"connectors.{name}", name=name, type=ctype
        )
    routes = tuple(
        _build(RouteConfig, r, f"routes[{i}]") if isinstance(r, dict) else _bad_route(i)
        for i, r in enumerate(raw_routes)
    )
    if (
        "workers" in data
        and isinstance(data["workers"], int)
        and not isinstance(data["workers"], bool)
    ):
        data["workers"] = str(data["workers"])
    cfg: Config = _build(Config, data, "")
    cfg = dataclasses.replace(cfg, connectors=connectors, routes=routes, source=source)
    if source != "<embedded defaults>":
        base = Path(source).parent
        cfg = dataclasses.replace(cfg, data_dir=resolve_path(cfg.data_dir, base))
    validate_config(cfg)
    return cfg


def _bad_route(i: int) -> RouteConfig:
    raise ConfigError(f"routes[{i}]: expected a table")


def _is_loopback_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_config(cfg: Config) -> None:
    """Cross-field checks: insecure combinations and dangling references."""
    _parse_listen(cfg.smtp.listen, "smtp.listen")
    _parse_listen(cfg.admin.listen, "admin.listen")
    _parse_listen(cfg.metrics.listen, "metrics.listen")
    if cfg.workers != "auto" and not (cfg.workers.isdigit() and int(cfg.workers) >= 1):
        raise ConfigError('workers: expected a positive integer or "auto"')
    if not cfg.worker_hang_timeout >= 3:
        raise ConfigError("worker_hang_timeout: expected at least 3 seconds")
    for i, net in enumerate(cfg.smtp.allowed_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"smtp.allowed_networks[{i}]: not a network: {net!r}") from exc
    for net in cfg.smtp.allowed_networks:
        if ipaddress.ip_network(net, strict=False).prefixlen == 0:
            raise ConfigError("smtp.allowed_networks: 0.0.0.0/0 would make an open relay")
    if bool(cfg.smtp.tls_cert) != bool(cfg.smtp.tls_key):
        raise ConfigError("smtp.tls_cert: tls_cert and tls_key go together")
    for user in cfg.smtp.users:
        if not user.password_hash.startswith("$argon2id$"):
            raise ConfigError(f"smtp.users.{user.name}.password_hash: expected an argon2id hash")
    if cfg.smtp.max_message_size < 1024:
        raise ConfigError("smtp.max_message_size: too small (bytes)")
    for name, c in cfg.connectors.items():
        where = f"connectors.{name}"
        if c.type not in CONNECTOR_TYPES:
            raise ConfigError(f"{where}.type: unknown connector type {c.type!r}")
        if c.tls not in TLS_MODES:
            raise ConfigError(f"{where}.tls: expected one of {', '.join(TLS_MODES)}")
        if c.type in ("relay", "mssante") and not c.host:
            raise ConfigError(f"{where}.host: required for a {c.type} connector")
        if c.type == "relay" and c.tls == "none" and not _is_loopback_host(c.host):
            raise ConfigError(f"{where}.tls: 'none' is only allowed towards a loopback host")
        if c.type == "relay" and c.password and c.tls != "required":
            raise ConfigError(f'{where}.password: AUTH needs tls = "required"')
        if c.type == "mssante":
            if c.tls != "required":
                raise ConfigError(f"{where}.tls: MSSanté requires TLS")
            if not c.client_cert:
                raise ConfigError(f"{where}.client_cert: MSSanté requires a client certificate")
            if not c.ca_file:
                raise ConfigError(f"{where}.ca_file: MSSanté requires the operator CA bundle")
            if not c.trust_list:
                raise ConfigError(f"{where}.trust_list: MSSanté requires the ANS trust list")
        if c.type == "lab_https":
            if not c.url.startswith("https://"):
                raise ConfigError(f"{where}.url: a lab upload URL must be https://")
    known = set(cfg.effective_connectors())
    names: set[str] = set()
    for i, r in enumerate(cfg.routes):
        where = f"routes[{i}]"
        if r.name in names:
            raise ConfigError(f"{where}.name: duplicate route name {r.name!r}")
        names.add(r.name)
        if r.action not in ROUTE_ACTIONS:
            raise ConfigError(f"{where}.action: expected one of {', '.join(ROUTE_ACTIONS)}")
        if not r.match:
            raise ConfigError(f"{where}.match: at least one pattern is required")
        if r.action not in ("reject", "hold") and r.connector not in known:
            raise ConfigError(f"{where}.connector: no [connectors.{r.connector}] section")
        if r.connector in cfg.connectors:
            ctype = cfg.connectors[r.connector].type
            if ctype == "mssante" and r.action != "deliver":
                raise ConfigError(f"{where}.action: the MSSanté connector only takes 'deliver'")
            if r.action == "deliver" and ctype != "mssante" and "@mssante" in r.match:
                raise ConfigError(
                    f"{where}.connector: '@mssante' recipients need the mssante connector"
                )
        for kind, action in r.overrides.items():
            if action not in TYPE_ACTIONS:
                raise ConfigError(
                    f"{where}.overrides.{kind}: expected one of {', '.join(TYPE_ACTIONS)}"
                )
        if r.unknown_files and r.unknown_files not in UNKNOWN_FILE_ACTIONS:
            raise ConfigError(f"{where}.unknown_files: expected pass, hold or reject")
    if cfg.scan.engine not in ("auto", "hyperscan", "re"):
        raise ConfigError("scan.engine: expected auto, hyperscan or re")


def _parse_listen(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) < 65536):
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def parse_listen(value: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 in brackets) into (host, port)."""
    return _parse_listen(value, "listen")


def default_config_path() -> Path | None:
    p = Path("portique.toml")
    return p if p.is_file() else None


def load_config(path: str | Path | None = None) -> Config:
    """Load `path`, else ./portique.toml if present, else the embedded defaults."""
    if path is None:
        path = default_config_path()
    if path is None:
        return parse_config({})
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(data, source=str(p.resolve()))
