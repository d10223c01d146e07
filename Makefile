# lhvjax build / test entry points. All targets except clean create .venv on first use.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV = .venv
STAMP = $(VENV)/.installed

# Only lint directories that exist.
LINT_DIRS = $(wildcard lhvjax tests experiments benchmarks notebooks)

.PHONY: demo test test-slow lint results bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lhvjax demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/python -m pytest

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)

results: $(STAMP)
	$(VENV)/bin/python experiments/run_all.py

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
