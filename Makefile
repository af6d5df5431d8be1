# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# torch first, pinned: the machines carry this CPU build, and without it pip would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Every install takes its versions from the lock (issue 21: a fresh clone must get what CI tested).
CONSTRAINTS ?= constraints.txt
# The extras installed into .venv, e.g. `make test EXTRAS=dev,ray,spark`.
EXTRAS ?= dev
LATEST_VENV ?= .venv-latest

.PHONY: setup demo test test-fast lint clean lock test-latest

# One stamp per set of extras: `make setup EXTRAS=dev,ray` on an existing .venv installs what it lacks.
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

setup: $(STAMP)

# Re-resolve the newest releases within pyproject's ranges (every extra) and rewrite $(CONSTRAINTS);
# commit it once `make test` passes with it. SKIP_EXTRAS=a,b leaves out extras this machine cannot install.
lock:
	$(PYTHON) .ci/lock.py --torch "$(TORCH_SPEC)" --out $(CONSTRAINTS) $(if $(SKIP_EXTRAS),--skip-extras $(SKIP_EXTRAS))

# The tests against the newest releases, in a venv of their own without the lock: an early warning of
# what the next `make lock` will bring. Prints the versions that differ from the lock first.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(LATEST_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[$(EXTRAS)]"
	$(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable | sed 's/+[A-Za-z0-9.]*$$//' | sort -f \
		| diff <(grep -v '^#' $(CONSTRAINTS) | sort -f) - | grep '^[<>]' || echo "(no version differs from $(CONSTRAINTS))"
	$(LATEST_VENV)/bin/ruff check .
	$(LATEST_VENV)/bin/ruff format --check .
	$(LATEST_VENV)/bin/mypy
	$(LATEST_VENV)/bin/pytest

# Synthetic archive → fit (CPU profile, MLflow in $(DEMO)/mlflow.db) → score with the registered model.
demo: setup
	MEDRES=$(CURDIR)/$(BIN)/medres pipelines/chest_xray_demo.sh $(DEMO)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The edit-test loop: lint and every test not marked slow (no servers, no multi-process runs, no fits of minutes).
test-fast: lint
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(DEMO) medres_work mlflow.db mlartifacts .pytest_cache .mypy_cache .ruff_cache
