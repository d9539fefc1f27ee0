# Portique: the two commands a new machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest system-deps venv bench clean

# The scan core and the message pipeline are compiled by mypyc (setup.py): their sources
# are prerequisites, so an edit recompiles them (an extension module is imported ahead of
# the .py beside it). The build tools are installed first, locked, and the build uses
# them (--no-build-isolation).
COMPILED_SOURCES := setup.py gateway/scan/_hyperscan.c gateway/scan/_digest.c gateway/scan/_native_text.c gateway/scan/_names.c gateway/scan/_reread.c gateway/scan/_validators.c gateway/scan/_first_names.c gateway/scan/_wordset.h gateway/scan/_triggers.h $(filter-out %/__init__.py,$(wildcard gateway/scan/*.py gateway/pipeline/*.py))

$(STAMP): pyproject.toml requirements.lock $(COMPILED_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock setuptools mypy
	$(BIN)/python -m pip install -q -c requirements.lock --no-build-isolation -e '.[test]'
	find gateway -name '*.so' -exec touch {} +  # built now (a rebuilt shim keeps its old date)
	touch $(STAMP)

venv: $(STAMP)

## make run: the gateway on its embedded defaults (127.0.0.1:2525 -> ./portique-data/outbox/)
run: $(STAMP)
	$(BIN)/portique serve

## make test: installs what the tests need (Debian packages when root), then lint, types, tests.
# system-deps comes first: the build links the Debian libhs, libcrypto and libpcre2-8 it
# installs.
test: system-deps $(STAMP) lint typecheck pytest

system-deps:
	@bash .ci/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check setup.py gateway connectors crypto tests load-tests
	$(BIN)/ruff format --check setup.py gateway connectors crypto tests load-tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python load-tests/bench_scan.py
	$(BIN)/python load-tests/bench_relay.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
	find gateway -name '*.so' -delete
	rm -f portique_scan__mypyc*.so portique_compiled__mypyc*.so
