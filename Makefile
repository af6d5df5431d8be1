# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# torch first, pinned: the machines carry this CPU build, and without it pip would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-fast lint clean

$(BIN)/medres: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/medres

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
	rm -rf $(VENV) $(DEMO) medres_work mlflow.db mlartifacts .pytest_cache .mypy_cache .ruff_cache
