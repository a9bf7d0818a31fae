# The two set-up commands: `make demo` and `make test`. Both create .venv and install
# what they need (Prometheus from the distribution's packages when it is missing).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINTED := sidecar tests examples benchmarks

.PHONY: demo test lint bench-latency bench-decisions prometheus test-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

prometheus:
	@scripts/install-prometheus.sh

test-deps:
	@scripts/install-test-deps.sh

demo: $(BIN)/.installed prometheus
	$(BIN)/promgate demo

lint: $(BIN)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

test: $(BIN)/.installed prometheus test-deps lint
	$(BIN)/pytest -q

bench-latency: $(BIN)/.installed prometheus
	$(BIN)/python benchmarks/detection_latency.py

bench-decisions: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/decisions/run.py

clean:
	rm -rf $(VENV) .promgate .pytest_cache .mypy_cache .ruff_cache
