# The two commands of the README:
#   make demo   set up, then run the order-process example on the embedded SQLite store
#   make test   set up, then lint, type-check (pyright and mypy, strict) and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench install dev clean sysdeps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

dev: $(BIN)/python sysdeps
	$(BIN)/python -m pip install --quiet -e '.[postgres,cli,metrics,otel,diagrams,http,web,testing]' --group dev

# System packages the tests need, from Debian's packages: Graphviz's dot (SVG and PNG
# diagrams), Prometheus's promtool (checks examples/prometheus-alerts.yml) and Chromium
# (the browser tests of the web pages drive /usr/bin/chromium through playwright).
.PHONY: sysdeps
sysdeps:
	@if ! command -v dot >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends graphviz prometheus chromium >/dev/null; \
	fi

demo: install
	$(BIN)/python examples/order_process.py

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/pyright --pythonpath $(BIN)/python
	$(BIN)/mypy

pytest: dev
	$(BIN)/python -m pytest

# pytest last, so that its summary closes the output
test: lint typecheck pytest

bench: dev
	$(BIN)/python bench/bench_order.py
	$(BIN)/python bench/bench_durable.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache orders.db orders.db-* trips.db trips.db-* scale_out.db scale_out.db-*

# The parallel-branches example: flight, hotel and car booked at once (trips.db, recreated each run)
.PHONY: trip
trip: install
	$(BIN)/python examples/trip_booking.py

# Many workers on one database: PostgreSQL (needs a server, see bench/README.md) and SQLite across processes, failover
.PHONY: bench-scale
bench-scale: dev
	$(BIN)/python -m pip install --quiet -e '.[postgres]' --group dev
	$(BIN)/python bench/bench_scale.py

# Many workers, one database: 1000 orders over 3 worker processes, one SIGKILLed midway
# (PostgreSQL at $$ORCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres; database orch_scale_out)
.PHONY: scale
scale: install
	$(BIN)/python -m pip install --quiet -e '.[postgres]'
	$(BIN)/python examples/scale_out.py
