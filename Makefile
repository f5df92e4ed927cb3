# Two commands on a fresh machine: `make demo` and `make test` (see README).
# Both create .venv with Python 3.12, install the pinned packages and the
# system libraries Qt needs offscreen; both are idempotent.
SHELL := /bin/sh
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?= --duration 60

.PHONY: demo test lint sysdeps venv lock bench clean

# The whole loop on the embedded emulated lab: a new session folder under sessions/.
demo: $(STAMP) sysdeps
	QT_QPA_PLATFORM=offscreen $(BIN)/brainpaste run --sim $(DEMO_ARGS)

test: $(STAMP) sysdeps lint
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

sysdeps:
	@tools/install_system_deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@PY=$$(tools/find_python312.sh) || exit 1; \
	if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
		rm -rf $(VENV); "$$PY" -m venv $(VENV) || exit 1; \
	fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

# Re-pin requirements.lock from what is installed (after changing pyproject.toml).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^brainpaste' > requirements.lock

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
