# The README's two commands: `make run` (install, migrate, serve on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch, installed before the project so that its `torch` range pulls no CUDA build.
# GPU users: set TORCH_SPEC to their CUDA build, or install torch into the venv first.
TORCH_SPEC ?= torch==2.13.0
# Where that build comes from: pip's own configuration when empty (a local wheel, a mirror); elsewhere
# TORCH_INDEX=https://download.pytorch.org/whl/cpu, as PyPI's Linux torch brings the CUDA libraries.
TORCH_INDEX ?=

.PHONY: install run test browser migrate lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	$(VENV)/bin/exprssl serve

migrate: install
	$(VENV)/bin/exprssl migrate

test: install browser
	$(PY) -m pytest -q

# The admin pages' browser tests (tests/e2e) drive Debian's chromium through its chromedriver.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver \
			|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends chromium chromium-driver; }; \
		else \
			echo "make: chromium and chromium-driver are missing (install them as root); browser tests will skip" >&2; \
		fi; \
	fi

lint: install
	$(PY) -m ruff check app worker models migrations tests bench
	$(PY) -m mypy app worker models

clean:
	rm -rf $(VENV) .pytest_cache
