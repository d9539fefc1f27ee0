"""Builds the configured connectors: `build_connectors(cfg) -> {name: Connector}`.

Dispatches on `type`: relay and outbox live here; mssante and lab_https are imported
lazily so that their dependencies load only when configured. Relative paths in a
connector section are resolved against the config file's folder first.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, cast

from connectors.base import Connector
from gateway.config import Config, ConnectorConfig
from gateway.errors import ConfigError

# Connector keys that hold file system paths.
_PATH_KEYS = (
    "ca_file",
    "client_cert",
    "client_key",
    "trust_list",
    "crl_file",
    "path",
    "smime_cert",
)


_LAZY = {
    "mssante": ("connectors.mssante", "MSSanteConnector"),
    "lab_https": ("connectors.lab_https", "LabHttpsConnector"),
}


def resolve_connector_paths(cfg: Config, connector: ConnectorConfig) -> ConnectorConfig:
    changes: dict[str, Any] = {
        key: str(cfg.path(value)) for key in _PATH_KEYS if (value := getattr(connector, key, ""))
    }
    return dataclasses.replace(connector, **changes) if changes else connector


def build_connector(cfg: Config, connector: ConnectorConfig) -> Connector:
    c = resolve_connector_paths(cfg, connector)
    if c.type == "relay":
        from connectors.relay import RelayConnector

        return RelayConnector(c)
    if c.type == "outbox":
        from connectors.outbox import OutboxConnector

        return OutboxConnector(c)
    if c.type in _LAZY:
        # Written alongside this module by other issues; imported only when configured.
        module_name, class_name = _LAZY[c.type]
        module = importlib.import_module(module_name)
        return cast(Connector, getattr(module, class_name)(c))
    raise ConfigError(f"connectors.{c.name}.type: unknown connector type {c.type!r}")


def build_connectors(cfg: Config) -> dict[str, Connector]:
    return {name: build_connector(cfg, c) for name, c in cfg.effective_connectors().items()}
