# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# torch is pinned first: a CPU wheel of 2.13.0 is on the machines used here; an unpinned torch
# would pull a multi-GB CUDA build. silero-vad and BeatNet ship the real models the tests use;
# their own dependencies are not needed (--no-deps).
$(VENV)/.test-deps: pyproject.toml setup.py | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps silero-vad==6.2.3 BeatNet==1.1.3
	touch $@

# The demo needs no torch: silero-vad's ONNX files are read as package data, found without
# importing the package (its __init__ imports torch); see edgeseq/commands/_silero.py.
$(VENV)/.demo-deps: pyproject.toml setup.py | $(PY)
	$(PIP) install -e '.[onnx]'
	$(PIP) install --no-deps silero-vad==6.2.3
	touch $@

demo: $(VENV)/.demo-deps
	$(VENV)/bin/edgeseq demo

# The suite runs the per-node interpreter (tests/conftest.py: one compile per one-off graph
# would cost minutes); the second run puts the input, streaming and real-model suites through
# the whole-graph compiler, the default path of a user's Model.
CODEGEN_SUITES := tests/kernels/test_streaming.py tests/kernels/test_runtime_inputs.py \
                  tests/unit/test_bad_input_api.py tests/models/test_silero.py

test: $(VENV)/.test-deps
	$(PY) -m pytest
	EDGESEQ_CODEGEN=1 $(PY) -m pytest $(CODEGEN_SUITES)

bench: $(VENV)/.test-deps
	$(PIP) install -e '.[bench]'
	$(PY) tools/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
