# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
BIN := $(VENV)/bin

.PHONY: demo test lint bench fuzz clean lock

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: requirements-dev.lock pyproject.toml $(UV)
	test -x $(BIN)/python || $(UV) venv --quiet --python $(PY) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode requirements-dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/dli-cancel demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The property-based tests (tests/unit/test_fuzz_*.py) with many more examples than `make test`
# runs: the hypothesis profile "deep" (tests/conftest.py); no per-test time limit.
fuzz: $(VENV)/.installed
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 \
		$(wildcard tests/unit/test_fuzz_*.py) $(PYTEST_ARGS)

# Bytecode is compiled first, as the Cloud Run build does: this machine sets
# PYTHONDONTWRITEBYTECODE, so without it every cold start would measure compilation.
bench: $(VENV)/.installed
	$(BIN)/python -m compileall -q -j 2 cancel_handler main.py bench
	$(BIN)/python -m bench

# Regenerate the lock files after changing dependencies in pyproject.toml.
lock: $(UV)
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements.txt
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements-dev.lock

clean:
	rm -rf $(VENV) $(TOOLS)
