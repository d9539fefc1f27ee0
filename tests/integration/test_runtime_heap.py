"""A serving runtime freezes its long-lived heap (gc.freeze) once started and after
each roster reload, and the engine a reload replaces is still freed. Run in a child
process: freezing the test process itself would keep every later test's garbage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .test_runtime import _closed_port, runtime_config

CHILD = r"""
import asyncio, gc, json, pickle, sys, weakref
from gateway.runtime import Runtime

async def main():
    cfg = pickle.loads(bytes.fromhex(sys.argv[1]))
    runtime = Runtime(cfg, settle_heap=True)
    await runtime.start()
    try:
        frozen_at_start = gc.get_freeze_count()
        # The engine's set of the practice's phone numbers lives and dies with the
        # engine; the engine itself, compiled by mypyc, takes no weak reference.
        first = weakref.ref(runtime.engine._practice_phones)
        reloaded = await runtime.reload_roster()
        return {
            "frozen_at_start": frozen_at_start,
            "reloaded": reloaded,
            "old_engine_freed": first() is None,
            "new_engine_frozen": gc.get_freeze_count() > 0 and runtime.engine is not None,
        }
    finally:
        await runtime.stop()

print(json.dumps(asyncio.run(main())))
"""


def test_serving_runtime_freezes_its_heap_and_frees_a_replaced_engine(tmp_path: Path) -> None:
    import pickle

    # Nothing is sent: the relay's port only has to parse.
    cfg = runtime_config(tmp_path, _closed_port())
    child = subprocess.run(
        [sys.executable, "-c", CHILD, pickle.dumps(cfg).hex()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.returncode == 0, child.stderr[-3000:]
    facts = json.loads(child.stdout.strip().splitlines()[-1])
    assert facts["frozen_at_start"] > 10_000  # the engine and everything built to start
    assert facts["reloaded"] is True
    assert facts["old_engine_freed"] is True
    assert facts["new_engine_frozen"] is True
