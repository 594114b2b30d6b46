# reta — set-up, demo and tests. `make demo` and `make test` install everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: help install fashion-mnist demo test test-slow lint clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) fashion-mnist  ## create .venv, install reta[dev,slurm,joblib] and the Fashion-MNIST package

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,slurm,joblib]'
	@touch $(STAMP)

fashion-mnist:  ## make sure the Debian package dataset-fashion-mnist is installed (raw IDX files)
	@if ls $(FMNIST_DIR)/train-images-idx3-ubyte* >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: found in $(FMNIST_DIR)"; \
	else \
	  echo "Fashion-MNIST: not found in $(FMNIST_DIR); installing the Debian package dataset-fashion-mnist"; \
	  SUDO=""; if [ "$$(id -u)" != 0 ]; then SUDO="sudo -n"; fi; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; } >/dev/null \
	  || { echo "error: could not install dataset-fashion-mnist (needs apt-get and root); install it by hand: apt-get install dataset-fashion-mnist, or put the IDX files under data/fashion_mnist/" >&2; exit 1; }; \
	fi

demo: install  ## squeeze (cached) + evaluate the random baseline on Fashion-MNIST
	$(BIN)/reta-squeeze
	$(BIN)/reta-evaluate ipc=10 protocol=kd seeds=[0]

test: install  ## run the fast test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: install  ## run the slow checks only
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install  ## ruff
	$(BIN)/ruff check src tests benchmarks experiments

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .cache
