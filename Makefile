# stepwise: `make build` and `make test` do all the set-up on a fresh machine.
PYTHON      ?= python3
VENV        := .venv
DEVICE_VENV := .venv-device
ARTIFACTS   ?= artifacts
TEST_ARTIFACTS := build/test-artifacts
PORT_DIR    := build/demo

export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

SOURCES := $(wildcard pipeline/*.py runtime/*.py firmware_bridge/*.py stepwise_cli/*.py)

.PHONY: tools build test test-build test-device serve bench bundle clean env device-env

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

test: tools $(VENV)/.installed $(DEVICE_VENV)/.installed $(TEST_ARTIFACTS)/manifest.json
	STEPWISE_TEST_ARTIFACTS=$(abspath $(TEST_ARTIFACTS)) $(VENV)/bin/pytest -q tests
	STEPWISE_TEST_ARTIFACTS=$(abspath $(TEST_ARTIFACTS)) $(DEVICE_VENV)/bin/pytest -q tests/runtime tests/firmware_bridge tests/stepwise_cli tests/test_architecture.py

## Demo, bench, bundle --------------------------------------------------------------
serve: $(DEVICE_VENV)/.installed
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) build
	$(DEVICE_VENV)/bin/python -m stepwise_cli.demo --artifacts $(ARTIFACTS)

bench: $(VENV)/.installed $(DEVICE_VENV)/.installed
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) build
	$(VENV)/bin/python -m bench.run --artifacts $(ARTIFACTS) --device-python $(DEVICE_VENV)/bin/python

clean:
	rm -rf $(VENV) $(DEVICE_VENV) build .pytest_cache .hypothesis *.egg-info
	find $(ARTIFACTS) -mindepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
