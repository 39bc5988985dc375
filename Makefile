# flowcause — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium demo test lint bench-engine bench-tracing bench-causal bench-suite bench-kafka kafka-up kafka-down clean

install: $(STAMP) chromium

# Headless Chromium for the dashboard's browser test (Debian package; as root, only if missing).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the dashboard browser test will skip (fail under CI=true)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/flowcause run-scenario scenarios/builtin/insurance_claims_bug.yaml --out out/demo
	$(BIN)/flowcause report --store out/demo/store --out out/demo/report.html

lint: install
	$(BIN)/ruff check .

# The Kafka tests need a real broker: `run` starts one (scripts/kafka_broker.py, own state file so a
# `make kafka-up` broker is left alone), runs pytest with FLOWCAUSE_KAFKA_BOOTSTRAP set, always stops
# the broker and exits with pytest's code. With FLOWCAUSE_KAFKA_BOOTSTRAP already set it starts none.
test: install
	$(BIN)/ruff check .
	$(BIN)/python scripts/kafka_broker.py --state .cache/kafka/test-broker.json run -- $(BIN)/python -m pytest -q --durations=12

# A broker to keep for running tests or benchmarks by hand: prints the `export ...` line to use.
KAFKA_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
kafka-up:
	@$(KAFKA_PY) scripts/kafka_broker.py up

kafka-down:
	@$(KAFKA_PY) scripts/kafka_broker.py down

bench-engine: install
	$(BIN)/python benchmarks/bench_engine.py

bench-kafka: install
	$(BIN)/python scripts/kafka_broker.py --state .cache/kafka/bench-broker.json run -- \
		$(BIN)/python benchmarks/bench_kafka.py

bench-tracing: install
	$(BIN)/python benchmarks/bench_tracing.py
	$(BIN)/python benchmarks/bench_tracing.py --step-work-us 100 --requests 5000
	$(BIN)/python benchmarks/bench_tracing.py --step-work-us 250 --requests 2000

bench-causal: install
	$(BIN)/python benchmarks/bench_causal.py

# Every built-in scenario at its full request counts, 5 seeds, our method beside the baselines
# (the window-comparing ones: dowhy-anomaly explains single requests).
SUITE_METHODS ?= flowcause dowhy-shift zscore first-anomalous random
bench-suite: install
	$(BIN)/flowcause suite --methods $(SUITE_METHODS) --repeats 5 --requests 20 --out out/bench-suite

clean:
	rm -rf $(VENV) out build *.egg-info
