# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
BIN := $(VENV)/bin

.PHONY: demo test test-unit lint bench fuzz clean lock browser

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# The wheel (and the editable install) hold only cancel_handler, what the function runs. The
# local tools beside it (dli_simulator, devstack, bench) are imported from the checkout: the
# .pth file puts the repository root on the venv's sys.path, so the tests, `dli-cancel demo`,
# `dli-cancel simulator` and `make bench` find them from any directory.
$(VENV)/.installed: requirements-dev.lock pyproject.toml $(UV)
	test -x $(BIN)/python || $(UV) venv --quiet --python $(PY) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode requirements-dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "dli-cancel-checkout.pth").write_text("$(CURDIR)\n")'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/dli-cancel demo

# All three tiers: tests/unit, tests/e2e (real servers), tests/deploy.
test: $(VENV)/.installed browser
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# In process only (no gcloud, Java or server subprocesses): the fast tier, with the "quick"
# hypothesis profile (25 examples per property; `make test` runs the full 200).
test-unit: $(VENV)/.installed
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-quick} $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

# Headless Chromium and chromedriver from Debian's packages, for the e2e tier's browser test of
# the approval page (tests marked `browser`: skipped without them, failed under CI=true).
# .ci/run calls it; installing needs root (or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver present"; \
	else \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

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
	$(BIN)/python -m compileall -q -j 2 cancel_handler main.py bench devstack dli_simulator
	$(BIN)/python -m bench

# Regenerate the lock files after changing dependencies in pyproject.toml.
lock: $(UV)
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements.txt
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements-dev.lock

clean:
	rm -rf $(VENV) $(TOOLS)
