# The two set-up commands: `make demo` and `make test`. Both create .venv and install
# what they need (Prometheus, and HAProxy for the tests, from the distribution's packages
# when they are missing).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINTED := sidecar tests examples benchmarks

.PHONY: demo test lint bench-latency bench-decisions bench-ledger bench-failover prometheus test-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

PROMETHEUS_PACKAGES := prometheus=prometheus promtool=prometheus \
	prometheus-alertmanager=prometheus-alertmanager amtool=prometheus-alertmanager

prometheus:
	@scripts/install-packages.sh $(PROMETHEUS_PACKAGES)

# HAProxy: the webhook actuator's worked example runs end to end against a real one
test-deps:
	@scripts/install-packages.sh $(PROMETHEUS_PACKAGES) haproxy=haproxy

demo: $(BIN)/.installed prometheus
	$(BIN)/promgate demo

lint: $(BIN)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

test: $(BIN)/.installed test-deps lint
	$(BIN)/pytest -q

bench-latency: $(BIN)/.installed prometheus
	$(BIN)/python benchmarks/detection_latency.py

bench-ledger: $(BIN)/.installed
	$(BIN)/python benchmarks/ledger_writes.py

# two replicas electing a leader through a Lease in the contract API server; SIGKILL the leader
bench-failover: $(BIN)/.installed
	$(BIN)/python benchmarks/failover.py

bench-decisions: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/decisions/run.py

clean:
	rm -rf $(VENV) .promgate .pytest_cache .mypy_cache .ruff_cache
