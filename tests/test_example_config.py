"""config/portique.example.toml is valid and documents every key the code accepts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gateway import config as config_module
from gateway.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "portique.example.toml"

SECTIONS = {
    "": config_module.Config,
    "smtp": config_module.SmtpConfig,
    "spool": config_module.SpoolConfig,
    "queue": config_module.QueueConfig,
    "connectors.*": config_module.ConnectorConfig,
    "routes": config_module.RouteConfig,
    "practice": config_module.PracticeConfig,
    "scan": config_module.ScanConfig,
    "files": config_module.FilesConfig,
    "audit": config_module.AuditConfig,
    "admin": config_module.AdminConfig,
    "metrics": config_module.MetricsConfig,
}
NOT_KEYS = {"source", "name", "type"}  # derived, or named by the section header


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert [r.name for r in cfg.routes] == ["mssante", "labs", "patients", "default"]
    assert cfg.connectors["lab_dupont"].type == "lab_https"


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.M))
    documented |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=", text))
    documented |= {
        part
        for header in re.findall(r"^#?\s*\[+([a-z_.]+)\]+", text, flags=re.M)
        for part in header.split(".")
    }
    missing = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name in NOT_KEYS and section != "routes":
                continue
            if f.name not in documented:
                missing.append(f"{section}.{f.name}" if section else f.name)
    assert not missing, f"undocumented config keys: {missing}"
