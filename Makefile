# Quick start: `make demo` then `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The installed-extras stamp files make re-runs instant; pyproject changes re-install.
$(VENV)/.examples: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet $(TORCH) -e ".[examples]"
	touch $@

$(VENV)/.all: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet $(TORCH) -e ".[all]"
	touch $@ $(VENV)/.examples

demo: $(VENV)/.examples
	$(VENV)/bin/slimkit demo

# The HTML report test renders the report in headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (echo "make test needs Chromium for the report test: apt-get install chromium" >&2; exit 1)

test: $(VENV)/.all chromium
	$(PY) -m pytest -n 2 --dist loadfile -q

lint: $(VENV)/.all
	$(PY) -m ruff check src tests benchmarks

bench: $(VENV)/.all
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info
