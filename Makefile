# One entry point for developers and CI. `make test` works on a fresh Debian/Ubuntu machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: demo test test-acl test-slow soak fleet brokers lint train bench mosquitto faketime systemd-tools systemd-test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	@# The torch export test wants torch's CPU wheel; where pip finds none without the index (an
	@# unpinned download is a multi-GB CUDA build), that one test skips and says why.
	@if $(PIP) download -q --no-index --no-deps -d $(VENV)/.torch-probe 'torch==2.13.0' >/dev/null 2>&1; \
	then $(PIP) install -q -e '.[test,test-torch]'; \
	else echo "no local CPU wheel of torch 2.13.0: the torch.onnx.export import test will skip"; fi
	rm -rf $(VENV)/.torch-probe
	touch $(STAMP)

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || { \
	  echo "installing mosquitto (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq mosquitto) >/dev/null || \
	  sudo sh -c 'apt-get update -qq && apt-get install -y -qq mosquitto' >/dev/null; }

# The clock-jump fault runs the agent under libfaketime (only the soak suite needs it).
faketime:
	@command -v faketime >/dev/null 2>&1 || { \
	  echo "installing faketime (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq faketime) >/dev/null || \
	  sudo sh -c 'apt-get update -qq && apt-get install -y -qq faketime' >/dev/null; }

# A container with systemd as PID 1 (systemd-nspawn) and a Debian root made by debootstrap.
systemd-tools:
	@command -v systemd-nspawn >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { \
	  echo "installing systemd-container and debootstrap (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq systemd-container debootstrap) >/dev/null || \
	  sudo sh -c 'apt-get update -qq && apt-get install -y -qq systemd-container debootstrap' >/dev/null; }

# The demo needs the agent and its runtime dependencies only, not the test and lint tools.
$(RUN_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(VENV)/bin/edge-agent run --config firmware-configs/generic-x86.toml

test: $(STAMP) mosquitto
	$(PY) -m pytest -q

# The command, sync and OTA suites with every test broker locked down by the shipped ACL
# (firmware-configs/mosquitto/edge-agent.acl): test agents log in as their device ids.
test-acl: $(STAMP) mosquitto
	EDGE_AGENT_TEST_ACL=1 $(PY) -m pytest -q tests/sync tests/ota tests/broker

test-slow: $(STAMP) mosquitto
	$(PY) -m pytest -q -m slow

# -s: each soak and fault test prints the figures it measured.
soak: $(STAMP) mosquitto faketime
	$(PY) -m pytest -q -s -m soak

# Root only: boots a container (root cached in $$EDGE_AGENT_TEST_CACHE, default
# /var/cache/edge-agent-test) and drives the installed service; -s prints each test's figures.
systemd-test: $(STAMP) mosquitto systemd-tools
	$(PY) -m pytest -q -s -m systemd tests/systemd

fleet: $(STAMP) mosquitto
	$(PY) -m pytest -q -m fleet

# The broker matrix on NATS and RabbitMQ (private nodes on loopback ports; both installed from
# Debian) and the three-node NATS cluster failover test; -s prints the failover figures.
brokers: $(STAMP) mosquitto
	@command -v nats-server >/dev/null 2>&1 && command -v rabbitmq-server >/dev/null 2>&1 || { \
	  echo "installing nats-server and rabbitmq-server (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq nats-server rabbitmq-server) >/dev/null; }
	$(PY) -m pytest -q -s -m brokers tests/brokers

# The code and its tests: ruff over the tree, mypy over agent/ and tests/ (pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/edge-agent bench --config firmware-configs/generic-x86.toml --json

# Training needs TensorFlow (1.6 GB): kept out of the runtime venv on purpose.
train:
	python3 -m venv .venv-train
	.venv-train/bin/pip install -q -e '.[train]'
	.venv-train/bin/python -m models.train all
