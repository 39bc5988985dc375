# flowcause — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench-engine bench-tracing bench-causal bench-suite bench-kafka kafka-up kafka-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/flowcause run-scenario scenarios/builtin/insurance_claims_bug.yaml --out out/demo

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench-engine: install
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) out build *.egg-info
