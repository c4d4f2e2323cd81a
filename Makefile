# Two commands matter: `make demo` and `make test`. Both build .venv first if needed.
# Python 3.12+ when the machine has one that runs (Django 6's tasks framework needs it), else python3 (>= 3.10).
# Each candidate is run, not just looked up: a pyenv shim can exist for a version it will not start.
PYTHON ?= $(shell for p in python3.13 python3.12 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) \
	$(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) python3; do \
	$$p -c 'import sys, venv, sqlite3; assert sys.version_info >= (3, 10)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-fast lint typecheck bench clean browser screenshots bytecode peers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) bytecode
	$(VENV)/bin/chute demo

# The whole suite in two phases (tests/phases.py): every test but the timing ones on parallel workers,
# then the timing ones alone. The order is random, its seed printed: `make test SEED=N` replays it.
test: $(STAMP) browser bytecode
	$(PY) tests/phases.py $(if $(SEED),--seed $(SEED))

# The inner loop, under a minute: every test that is neither slow nor timing, on the memory and SQLite
# brokers only (the conformance suite, the worker, the API, the CLI...), in parallel. `make test` before
# a submission.
test-fast: $(STAMP) bytecode
	CHUTE_TEST_BROKERS=memory,sqlite $(PY) -m pytest -n 8 --dist worksteal -m "not timing and not slow"

# The editable install leaves chute without .pyc files, and with PYTHONDONTWRITEBYTECODE=1 (set on
# the project's machines) every process compiled chute's source again: 76 ms per process start
# (cProfile), paid by each worker and CLI process a test starts. compileall writes them regardless
# and skips files already up to date (0.3 s then); an edited file's stale .pyc is simply ignored.
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j0 src tests examples $(wildcard benchmarks/*.py) >/dev/null

# The dashboard's browser test drives Debian's chromium: install it when missing and we can (root + apt);
# otherwise the test skips locally and fails under CI=true / CHUTE_REQUIRE_SERVICES=1.
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "could not install chromium: the browser test will skip (or fail in CI)"; \
	else echo "no $(CHROMIUM): apt-get install chromium to run the browser test"; fi; }

screenshots: $(STAMP) browser
	CHUTE_SCREENSHOTS_DIR=docs/images $(PY) -m pytest tests/dashboard/test_dashboard_browser.py -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP) bytecode
	$(PY) benchmarks/throughput.py

# The peer harness (../shared/bench/peers) beside ours, with a chute venv built like the peers' (docs/benchmarks.md).
peers:
	benchmarks/peers_setup.sh

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
	find src tests examples benchmarks -path benchmarks/.peers -prune -o -name __pycache__ -prune -exec rm -rf {} +
