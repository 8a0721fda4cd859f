# Two entry points, both self-installing into .venv from exact pins:
#   make demo   -> data -> train -> evaluate -> convert -> validate on the built-in shapes data
#   make test   -> the test suite
# --no-compile: pip would byte-compile every module of torch, TensorFlow and the rest (measured: 188 s
# against 92 s for .venv on 2 cores); Python compiles the ones a run imports, once, on first import.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-12)
# model-signing cannot share .venv (edgemnv2/signing.py says why): its own pinned venv
SIGN_VENV  := .venv-signing
SIGN_STAMP := $(SIGN_VENV)/.installed-$(shell cat requirements/model-signing.txt | sha256sum | cut -c1-12)
DEMO_DIR ?= demo

.PHONY: setup demo test bench clean

setup: $(STAMP) $(SIGN_STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -c requirements/constraints.txt -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

$(SIGN_STAMP): requirements/model-signing.txt
	test -x $(SIGN_VENV)/bin/python || $(PY) -m venv $(SIGN_VENV)
	$(SIGN_VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile --no-deps -r requirements/model-signing.txt
	$(SIGN_VENV)/bin/python -c "import model_signing, numpy, ai_edge_litert.interpreter"
	rm -f $(SIGN_VENV)/.installed-* && touch $(SIGN_STAMP)

demo: setup
	$(BIN)/edgemnv2 demo --out $(DEMO_DIR)

# two xdist workers, whole files each, longest first (tests/conftest.py: FILES_LONGEST_FIRST, OMP_WAIT_POLICY)
test: setup
	$(BIN)/ruff check edgemnv2 conversion quantization tests benchmarks device_tests
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

bench: setup
	$(BIN)/python benchmarks/targets.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
