"""The scan core runs compiled by mypyc (setup.py), and the same source run as plain
Python finds the same identifiers and writes the same text.

The plain-Python run is a child process whose import system reads the compiled folders
(gateway/scan and gateway/pipeline) from their .py files only (a path hook for those
folders), so both sides run the same source. `run_from_source` is that child, shared
with tests/pipeline/test_compiled.py."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.scan import (
    FieldKind,
    Finding,
    IdentifierKind,
    TextField,
    TransformPolicy,
    VaultEntry,
    build_engine,
)
from tests.scan.corpus import EXTRA_TEMPLATES, PRACTICE, TEMPLATES, make_corpus

ROOT = Path(__file__).resolve().parents[2]
SCAN_DIR = ROOT / "gateway" / "scan"
# The folders setup.py compiles: read from source in the child.
COMPILED_DIRS = (SCAN_DIR, ROOT / "gateway" / "pipeline")

SOURCE_ONLY_CHILD = r"""
import importlib
import importlib.machinery as machinery
import sys

target, source_dirs = sys.argv[1], frozenset(sys.argv[2:])

def source_only(path):
    if path not in source_dirs:
        raise ImportError  # any other folder: the usual finders
    return machinery.FileFinder(path, (machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES))

sys.path_hooks.insert(0, source_only)
sys.path_importer_cache.clear()
module, _, function = target.partition(":")
result = getattr(importlib.import_module(module), function)()
for name, loaded in list(sys.modules.items()):
    if name.startswith(("gateway.scan.", "gateway.pipeline.")):
        assert str(loaded.__file__).endswith(".py"), loaded.__file__
print(result)
"""


def run_from_source(target: str) -> str:
    """What `module:function`() returns (as printed), computed in a child process that
    runs gateway/scan and gateway/pipeline from their .py source, never an extension."""
    child = subprocess.run(
        [sys.executable, "-c", SOURCE_ONLY_CHILD, target, *map(str, COMPILED_DIRS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout.strip()


def corpus_outcome(count: int = 240) -> str:
    """A digest of the findings and the rewritten texts of `count` corpus messages (every
    template, with their roster), with both matchers."""
    messages, roster = make_corpus(count, templates=TEMPLATES + EXTRA_TEMPLATES)
    outcome = hashlib.sha256()
    for kind in ("hyperscan", "re"):
        engine = build_engine(
            patients=roster,
            practice=PRACTICE,
            digest_key=b"k" * 32,
            pseudonym_key=b"s" * 32,
            engine=kind,
        )
        for message in messages:
            findings = engine.scan_fields(message.fields)
            texts = engine.rewrite_fields(message.fields, findings, TransformPolicy("lab.example"))
            outcome.update(repr(findings).encode())
            outcome.update(repr(engine.scan_spans(message.fields)).encode())
            outcome.update("\x00".join(texts.texts).encode())
    return outcome.hexdigest()


def assert_compiled_unless_built_pure(folder: Path) -> None:
    """Every module of `folder` but __init__ is imported from an extension (from its .py
    when the build was PORTIQUE_PURE_PYTHON=1)."""
    pure = os.environ.get("PORTIQUE_PURE_PYTHON") == "1"
    package = ".".join(folder.relative_to(ROOT).parts)
    names = sorted(p.stem for p in folder.glob("*.py") if p.name != "__init__.py")
    assert names
    for name in names:
        origin = str(importlib.import_module(f"{package}.{name}").__file__)
        assert origin.endswith(".py") if pure else origin.endswith(".so"), (
            f"{package}.{name} from {origin}"
        )


def test_scan_modules_are_compiled_unless_built_pure() -> None:
    assert_compiled_unless_built_pure(SCAN_DIR)


def test_compiled_and_plain_python_find_and_write_the_same() -> None:
    assert run_from_source("tests.scan.test_compiled:corpus_outcome") == corpus_outcome()


def test_findings_and_vault_entries_stay_frozen_dataclasses() -> None:
    """Finding, VaultEntry and TextField have their own __init__ (compiled: native stores); to every
    caller they are still frozen dataclasses (the pipeline uses dataclasses.replace)."""
    finding = Finding(IdentifierKind.NAME, 1, 2, 3, "d")
    assert dataclasses.replace(finding, field=0) == Finding(
        kind=IdentifierKind.NAME, field=0, start=2, end=3, digest="d", patient=None
    )
    assert hash(finding) == hash(Finding(IdentifierKind.NAME, 1, 2, 3, "d", None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.start = 0  # type: ignore[misc]
    entry = VaultEntry(token="PAT-00000-00000", audience="a", patient="p", identity="X Y")
    assert (entry.token, entry.audience, entry.patient, entry.identity) == (
        "PAT-00000-00000",
        "a",
        "p",
        "X Y",
    )
    assert "X Y" not in repr(entry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.identity = "Z"  # type: ignore[misc]
    field = TextField("Jean DUPONT", FieldKind.SUBJECT)
    assert field == TextField(text="Jean DUPONT", kind=FieldKind.SUBJECT)
    assert TextField("x").kind is FieldKind.BODY
    assert "DUPONT" not in repr(field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        field.text = ""  # type: ignore[misc]
