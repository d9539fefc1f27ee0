"""Build hook: the scanning core (gateway/scan) compiled to C by mypyc.

Same source, same behaviour: mypyc turns the typed Python modules into C extensions, and
Python imports an extension ahead of the .py beside it. The scan runs several times per
message (first scan, then the verification of every rewritten copy), and compiled it
does the same work in about a third less CPU (load-tests/bench_scan.py).

PORTIQUE_PURE_PYTHON=1 builds without compiling (no C compiler needed): the modules then
run as plain Python, with the same results, slower.
"""

import os

from setuptools import setup

COMPILED_MODULES = [
    "gateway/scan/_fold.py",
    "gateway/scan/engine.py",
    "gateway/scan/matchers.py",
    "gateway/scan/model.py",
    "gateway/scan/names.py",
    "gateway/scan/patients.py",
    "gateway/scan/shapes.py",
    "gateway/scan/validators.py",
]

ext_modules = []
if os.environ.get("PORTIQUE_PURE_PYTHON") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED_MODULES, opt_level="3", group_name="portique_scan")

setup(ext_modules=ext_modules)
