# One command each: `make demo` runs the main job, `make test` runs every test.
# Both create the virtualenv and (for tests) build the control plane when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help venv binaries postgresql demo test test-unit test-integration lint crds manifests bench chaos clean

help:
	@echo "make demo        run the demo (no cluster needed)"
	@echo "make test        lint + unit + integration tests (builds the control plane once)"
	@echo "make test-unit   fast tests only"
	@echo "make lint        ruff, mypy, import-linter"
	@echo "make crds        regenerate the CRD YAML from molt.api (and the chart's copy)"
	@echo "make manifests   re-render deploy/molt.yaml from charts/molt"
	@echo "make chaos       the chaos tests at full count (100 kills, 1000 simulated fleets, 400 specs per kind; slow)"
	@echo "make binaries    build/find etcd, kube-*, kubectl, kwok, helm, promtool (cached in ~/.cache/molt)"
	@echo "make postgresql  install Debian's PostgreSQL for the history tests when missing"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(STAMP)

postgresql:
	bash scripts/ensure-postgresql.sh

binaries: venv
	$(BIN)/python -m molt.sandbox.binaries

demo: venv
	$(BIN)/molt demo

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

crds: venv
	$(BIN)/python -m molt.api.crd
	$(BIN)/python -m molt.api.crd charts/molt/crds

manifests: venv
	$(BIN)/python -m molt.sandbox.chart charts/molt deploy/molt.yaml

test-unit: venv
	$(BIN)/pytest -m unit

test-integration: venv binaries postgresql
	$(BIN)/pytest -m integration

test: lint binaries postgresql
	$(BIN)/pytest

bench: venv binaries
	$(BIN)/python -m bench

# The chaos tests at full count: 100 kills of molt run (MOLT_CHAOS_SEED=N replays a run)
# and 1000 random simulated fleets of 2-4 days each, no time cap (MOLT_SIM_SEED=N
# MOLT_SIM_FLEETS=1 replays one; `make test` runs as many as fit in 45 s), and 400
# generated specs per kind sent to the API server (MOLT_FUZZ_SEED=N replays a run).
chaos: venv binaries
	MOLT_SIM_FLEETS=$${MOLT_SIM_FLEETS:-1000} MOLT_SIM_TIME_CAP=$${MOLT_SIM_TIME_CAP:-0} $(BIN)/pytest -s tests/unit/test_sim_invariants.py
	MOLT_CHAOS_KILLS=$${MOLT_CHAOS_KILLS:-100} $(BIN)/pytest -s tests/integration/test_chaos_kills.py
	MOLT_FUZZ_SPECS=$${MOLT_FUZZ_SPECS:-400} $(BIN)/pytest -s tests/integration/test_fuzz_api_server.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
