# The two commands a new user types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-all lint format drill demo docs clean bench

setup: $(STAMP)

# Re-install only when the requirements or the package metadata change.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

# Lint and format check (ruff, configured in pyproject.toml); CI runs it beside `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrite the tree: the safe lint fixes (import order, pyupgrade), then the formatter. `make lint` then
# lists what needs a human.
format: setup
	$(VENV)/bin/ruff check --fix --exit-zero --silent .
	$(VENV)/bin/ruff format .

# The fault and bad-input drills (SIGKILL, full disk, bombs, huge texts): docs/RELIABILITY.md.
drill: setup
	$(PY) -m pytest -q -s -m drill tests/test_drills.py

demo: setup
	$(VENV)/bin/unimedvl demo

# The command-line reference, generated from the parsers (a test fails when it is stale).
docs: setup
	$(PY) -m unimedvl.cli_docs > docs/CLI.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
