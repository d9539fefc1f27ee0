"""The scan core runs compiled by mypyc (setup.py), and the same source run as plain
Python finds the same identifiers and writes the same text.

The plain-Python run is a child process whose import system reads gateway/scan from the
.py files only (a path hook for that one folder), so both sides run the same source."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

from gateway.scan import TransformPolicy, build_engine
from tests.scan.corpus import EXTRA_TEMPLATES, PRACTICE, TEMPLATES, make_corpus

ROOT = Path(__file__).resolve().parents[2]
SCAN_DIR = ROOT / "gateway" / "scan"
COMPILED = sorted(p.stem for p in SCAN_DIR.glob("*.py") if p.name != "__init__.py")

SOURCE_ONLY_CHILD = r"""
import importlib.machinery as machinery
import sys

scan_dir = sys.argv[1]

def source_only(path):
    if path != scan_dir:
        raise ImportError  # any other folder: the usual finders
    return machinery.FileFinder(path, (machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES))

sys.path_hooks.insert(0, source_only)
sys.path_importer_cache.clear()
import gateway.scan.engine
assert gateway.scan.engine.__file__.endswith(".py"), gateway.scan.engine.__file__
from tests.scan.test_compiled import corpus_outcome
print(corpus_outcome())
"""


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
            outcome.update("\x00".join(texts.texts).encode())
    return outcome.hexdigest()


def test_scan_modules_are_compiled_unless_built_pure() -> None:
    pure = os.environ.get("PORTIQUE_PURE_PYTHON") == "1"
    for name in COMPILED:
        module = importlib.import_module(f"gateway.scan.{name}")
        origin = str(module.__file__)
        assert origin.endswith(".py") if pure else origin.endswith(".so"), (
            f"gateway.scan.{name} from {origin}"
        )


def test_compiled_and_plain_python_find_and_write_the_same() -> None:
    child = subprocess.run(
        [sys.executable, "-c", SOURCE_ONLY_CHILD, str(SCAN_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == corpus_outcome()
