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

Beside them, seven hand-written C modules, each with a Python fallback that gives the
same results (see their headers for why they exist). Three are built when pkg-config finds
their library's headers (`make test` installs them):
- gateway/scan/_hyperscan.c: Hyperscan scanning that returns its hits as a list, with the
  digit-led, name-junction and title shape triggers found by a walk over the bytes in
  the same scan (gateway/scan/_triggers.h). It links Debian's libhs (libhyperscan-dev);
  without it the scanner uses the python-hyperscan binding, Hyperscan then running every
  trigger.
- gateway/scan/_digest.c: the finding digests (HMAC-SHA256) in one call. It links OpenSSL's
  libcrypto (libssl-dev), the library Python's hashlib links already; without it the
  engine computes them with hashlib.
- gateway/scan/_reread.c: the re-reads of the shapes' Hyperscan hits, with JIT-compiled
  PCRE2 patterns. It links Debian's libpcre2-8 (libpcre2-dev); without it the matcher
  re-reads with Python `re`.
The other four need no library:
- gateway/scan/_native_text.c: the folding of text to ASCII and the word view, each in
  one pass; without it gateway/scan/_fold.py and matchers.py translate in Python.
- gateway/scan/_names.c: the name rules' word walks (pair and trigger candidates, display
  names) and the street and town trims, each word read in place; without it
  gateway/scan/names.py and engine.py read them in Python.
- gateway/scan/_validators.c: the hot candidate validators (birth labels, dates, French
  phones, NIR keys, IBANs), read in place; without it gateway/scan/validators.py runs its
  Python code.
- gateway/scan/_first_names.c: the first names read next to a rostered surname, and the
  civility before one, read in place; without it gateway/scan/engine.py runs its Python.
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


def pkg_config_extension(
    name: str, source: str, library: str, depends: list[str] | None = None
) -> list[Extension]:
    """Extension `name` built from `source` and linked to `library` when pkg-config finds
    the library and its headers, else nothing (the module's Python fallback is used)."""
    try:
        found = subprocess.run(
            ["pkg-config", "--cflags", "--libs", library],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    return [
        Extension(
            name,
            [source],
            include_dirs=[flag[2:] for flag in found if flag.startswith("-I")],
            libraries=[flag[2:] for flag in found if flag.startswith("-l")],
            library_dirs=[flag[2:] for flag in found if flag.startswith("-L")],
            depends=depends or [],
        )
    ]


ext_modules = []
if os.environ.get("PORTIQUE_PURE_PYTHON") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED_MODULES, opt_level="3", group_name="portique_compiled")
    ext_modules += pkg_config_extension(
        "gateway.scan._hyperscan",
        "gateway/scan/_hyperscan.c",
        "libhs",
        depends=["gateway/scan/_triggers.h"],  # the triggers found by a C walk
    )
    ext_modules += pkg_config_extension(
        "gateway.scan._digest", "gateway/scan/_digest.c", "libcrypto"
    )
    ext_modules += pkg_config_extension(
        "gateway.scan._reread", "gateway/scan/_reread.c", "libpcre2-8"
    )
    ext_modules.append(Extension("gateway.scan._native_text", ["gateway/scan/_native_text.c"]))
    # _names.c and _first_names.c share their word set (gateway/scan/_wordset.h).
    wordset = ["gateway/scan/_wordset.h"]
    ext_modules.append(Extension("gateway.scan._names", ["gateway/scan/_names.c"], depends=wordset))
    ext_modules.append(Extension("gateway.scan._validators", ["gateway/scan/_validators.c"]))
    ext_modules.append(
        Extension("gateway.scan._first_names", ["gateway/scan/_first_names.c"], depends=wordset)
    )

setup(ext_modules=ext_modules)
