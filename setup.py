"""Build hook: the scanning core (gateway/scan) and the message pipeline
(gateway/pipeline) compiled to C by mypyc.

Same source, same behaviour: mypyc turns the typed Python modules into C extensions, and
Python imports an extension ahead of the .py beside it. Both run on every message, and
more than once: the scan on the first read and on the verification of every rewritten
copy, the pipeline's MIME walk, header decoding and rebuild around each of them.
Compiled, the scan does the same work in about a third less CPU, and the pipeline's own
Python work shrinks too (load-tests/bench_scan.py, load-tests/cpu_per_message.sh).
gateway/pipeline/__init__.py stays Python: it only re-exports.

Compiled code checks the declared types at run time, so the annotations must say what
the values really are, the email package's included (typeshed is narrower than what
compat32 returns for hostile headers: see the comments in gateway/pipeline/message.py).
tests/pipeline/test_compiled.py and tests/scan/test_compiled.py run the plain-Python
source beside the compiled build and require the same results.

PORTIQUE_PURE_PYTHON=1 builds without compiling (no C compiler needed): the modules then
run as plain Python, with the same results, slower.

Beside them, one hand-written C module, gateway/scan/_hyperscan.c: Hyperscan scanning
that returns its hits as a list (see its header for why). It links Debian's libhs and is
built when its headers are installed (libhyperscan-dev; `make test` installs it). Without
it the scanner uses the python-hyperscan binding, with the same results.
"""

import os
import subprocess

from setuptools import Extension, setup

COMPILED_MODULES = [
    "gateway/scan/_fold.py",
    "gateway/scan/engine.py",
    "gateway/scan/matchers.py",
    "gateway/scan/model.py",
    "gateway/scan/names.py",
    "gateway/scan/patients.py",
    "gateway/scan/shapes.py",
    "gateway/scan/validators.py",
    "gateway/pipeline/message.py",
    "gateway/pipeline/mime.py",
    "gateway/pipeline/model.py",
    "gateway/pipeline/process.py",
]


def hyperscan_extension() -> list[Extension]:
    """gateway.scan._hyperscan when libhs and its headers are installed, else nothing."""
    try:
        found = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "libhs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    return [
        Extension(
            "gateway.scan._hyperscan",
            ["gateway/scan/_hyperscan.c"],
            include_dirs=[flag[2:] for flag in found if flag.startswith("-I")],
            libraries=[flag[2:] for flag in found if flag.startswith("-l")],
            library_dirs=[flag[2:] for flag in found if flag.startswith("-L")],
        )
    ]


ext_modules = []
if os.environ.get("PORTIQUE_PURE_PYTHON") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED_MODULES, opt_level="3", group_name="portique_compiled")
    ext_modules += hyperscan_extension()

setup(ext_modules=ext_modules)
