# Quick start: `make demo` then `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-fast lint bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The installed-extras stamp files make re-runs instant; pyproject changes re-install.
# The demo exports to ONNX and measures on onnxruntime: it needs the examples and onnx extras.
$(VENV)/.demo: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet $(TORCH) -e ".[examples,onnx]"
	touch $@

# torchvision's model zoo for the coverage tests goes beside the environment, not into it
# (transformers imports an installed torchvision, whose CUDA build fails beside CPU torch);
# tests/zoo/torchvision_shim.py is the only thing that puts it on the path.
$(VENV)/.all: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet $(TORCH) -e ".[all]"
	$(PIP) install --quiet --no-deps --upgrade --target $(VENV)/zoo torchvision==0.28.0
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(VENV)/bin/slimkit demo

# The HTML report test renders the report in headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (echo "make test needs Chromium for the report test: apt-get install chromium" >&2; exit 1)

test: $(VENV)/.all chromium
	$(PY) -m pytest -n 2 --dist loadfile -q

# Daily work: everything but the tests marked slow (under 2 minutes on 2 cores).
test-fast: $(VENV)/.all
	$(PY) -m pytest -n 2 --dist loadfile -q -m "not slow"

lint: $(VENV)/.all
	$(PY) -m ruff check src tests benchmarks

bench: $(VENV)/.all
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info
