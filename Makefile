# Fieldwatch: `make run` sets up and starts the whole platform; `make test` runs the checks and the test-suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py

.PHONY: run test setup services lint format bench doctor clean broker-plugin-deps proto

# --- installation (stamp files make re-runs instant while requirements are unchanged) ----------------------------
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-base: $(BIN)/python requirements/base.txt
	$(BIN)/pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.installed-local: $(VENV)/.installed-base requirements/local.txt requirements/local-nodeps.txt
	$(BIN)/pip install --quiet -r requirements/local.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/local-nodeps.txt
	touch $@

# The Sparkplug B protobuf module, generated from the committed .proto (the generated code is not committed).
SPARKPLUG_PROTO := apps/telemetry/ingest/dialects/sparkplug/sparkplug_b.proto
$(SPARKPLUG_PROTO:.proto=_pb2.py): $(SPARKPLUG_PROTO) $(VENV)/.installed-base
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. $(SPARKPLUG_PROTO)
proto: $(SPARKPLUG_PROTO:.proto=_pb2.py)

# Front-end libraries (uPlot) and the TimescaleDB test server come from the npm registry, never from the repo.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# --- the platform ----------------------------------------------------------------------------------------------------
services: $(VENV)/.installed-base proto
	@$(MANAGE) fieldwatch_doctor --preflight

setup: services node_modules/.package-lock.json broker-plugin-deps
	$(MANAGE) ensure_database
	$(MANAGE) migrate --noinput
	$(MANAGE) install_schedules
	$(MANAGE) broker_setup
	$(MANAGE) seed_demo
	$(MANAGE) broker_sync
	$(MANAGE) collectstatic --noinput --verbosity 0

run: setup
	@echo
	@echo "  Fieldwatch is starting on http://127.0.0.1:8000/  (admin: http://127.0.0.1:8000/admin/)"
	@echo "  Demo logins: alice / fieldwatch-alice (admin), bob / fieldwatch-bob (operator, Site A),"
	@echo "               carol / fieldwatch-carol (viewer, Site B).   Ctrl-C stops every process."
	@echo "  MQTT: the project's own Mosquitto (Procfile 'broker', MQTT_URL, default 127.0.0.1:1884), logins only."
	@echo
	$(BIN)/honcho start --procfile Procfile

doctor: $(VENV)/.installed-base
	$(MANAGE) fieldwatch_doctor

# --- checks ----------------------------------------------------------------------------------------------------------
lint: $(VENV)/.installed-local
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-local
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The broker's ThingsBoard plugin (docker/mosquitto/plugin) is compiled on the machine that runs the broker, against
# its Mosquitto headers (by `manage.py broker_setup` and the tests' brokers).
broker-plugin-deps:
	@test -f /usr/include/mosquitto_plugin.h -a -f /usr/include/mosquitto.h -a -f /usr/include/openssl/evp.h \
		-a -x /usr/bin/cc || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends gcc libc6-dev mosquitto-dev libmosquitto-dev libssl-dev >/dev/null; }

# The browser tests drive Debian's Chromium: Playwright cannot download its own browsers on our machines.
/usr/bin/chromium:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

test: lint proto node_modules/.package-lock.json /usr/bin/chromium broker-plugin-deps
	$(BIN)/python -m pytest

# One benchmark at a time (they share the machine's cores): make bench [BENCH=ingest|listener_drain|timeseries|
# dashboard_clients] [ARGS="--seconds 5"]. See bench/README.md.
BENCH ?= ingest
bench: $(VENV)/.installed-base
	$(BIN)/python bench/$(BENCH).py $(ARGS)

clean:
	rm -rf $(VENV) node_modules staticfiles .pytest_cache .hypothesis
