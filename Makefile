# Two entry points a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint test-py38

# JetPack 5 ships Python 3.8. Paddle 3 has no 3.8 wheel here, so this runs every suite that does
# not need Paddle on 3.8 (pyenv's 3.8 when present; skipped with a message otherwise).
PY38 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.8*/bin/python3.8) $(shell command -v python3.8 2>/dev/null))
PY38_TESTS := tests/manifest tests/pipeline tests/processing tests/mqtt tests/telemetry tests/sources \
	tests/service/test_state.py tests/service/test_notify.py tests/fleet/test_verify.py tests/fleet/test_artifacts.py
PY38_SKIP := --ignore=tests/manifest/test_fuzz.py --ignore=tests/processing/test_real_models.py \
	--ignore=tests/pipeline/test_cascade_ocr.py --ignore=tests/processing/test_ppdet_export.py

$(BIN)/edge-agent: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[paddle,onnx,dev]'
	$(BIN)/pip install -q --no-deps tensorrt-stubs
	touch $@

setup: $(BIN)/edge-agent
	@command -v mosquitto >/dev/null || command -v /usr/sbin/mosquitto >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null)
	@# systemd-analyze verifies the unit, shellcheck the installer, strace times the kill -9 fault
	@# scenarios; their tests skip with a reason without them.
	@command -v systemd-analyze >/dev/null && command -v shellcheck >/dev/null && command -v strace >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq systemd shellcheck strace >/dev/null) || true
	@# DejaVu Sans renders the text the OCR tests read (tests/pipeline/test_cascade_ocr.py skips without it).
	@test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || \
	  (apt-get update -qq && apt-get install -y -qq fonts-dejavu-core >/dev/null) || true

demo: setup
	$(BIN)/python -m agent.demo

test: setup
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-py38

$(VENV)38/bin/python: pyproject.toml
	$(PY38) -m venv $(VENV)38
	$(VENV)38/bin/pip install -q --upgrade pip
	$(VENV)38/bin/pip install -q -e . pytest hypothesis
	touch $@

test-py38:
ifeq ($(PY38),)
	@echo "test-py38: skipped, no Python 3.8 interpreter on this machine"
else
	$(MAKE) --no-print-directory $(VENV)38/bin/python
	$(VENV)38/bin/python -m pytest -q -p no:cacheprovider $(PY38_TESTS) $(PY38_SKIP)
endif

lint: setup
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy
