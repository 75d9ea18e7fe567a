# The README's two commands: `make run` (install, migrate, serve on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch, installed before the project so that its `torch` range pulls no CUDA build.
# GPU users: set TORCH_SPEC to their CUDA build, or install torch into the venv first.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test migrate lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	$(VENV)/bin/exprssl serve

migrate: install
	$(VENV)/bin/exprssl migrate

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check app worker models migrations tests bench
	$(PY) -m mypy app worker models

clean:
	rm -rf $(VENV) .pytest_cache
