# Two entry points a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/edge-agent: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[paddle,onnx,dev]'
	$(BIN)/pip install -q --no-deps tensorrt-stubs
	touch $@

setup: $(BIN)/edge-agent
	@command -v mosquitto >/dev/null || command -v /usr/sbin/mosquitto >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null)

demo: setup
	$(BIN)/python -m agent.demo

test: setup
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy
