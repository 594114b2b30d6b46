# reta — set-up, demo and tests. `make demo` and `make test` install everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist processes for make test (auto: one per core); --dist loadfile keeps each test file, and so its
# module fixtures, in one worker; each test pins one torch thread (tests/conftest.py)
TEST_WORKERS ?= auto

SCALE ?= cpu
DEMO_IPC ?= 5
DEMO_TEACHER_EPOCHS ?= 1
REPORT := $(BIN)/reta-report
# where the table targets write their reports: a fresh folder, never over the committed tables in experiments/ (made
# by other commands, e.g. KD and hard-label students side by side; each experiment's README says how)
TABLES ?= outputs/tables

.PHONY: help install fashion-mnist demo test test-slow lint clean table1 table2 table3 table4 fig4 fig5 fig6 smoke-paper \
  bench-loading published

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) fashion-mnist  ## create .venv, install reta[dev,slurm,joblib] and the Fashion-MNIST package

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,slurm,joblib]'
	@touch $(STAMP)

fashion-mnist:  ## make sure the Debian package dataset-fashion-mnist is installed (raw IDX files)
	@if dpkg-query -L dataset-fashion-mnist 2>/dev/null | grep -q 'train-images-idx3-ubyte'; then \
	  echo "Fashion-MNIST: the Debian package dataset-fashion-mnist is installed"; \
	else \
	  echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist"; \
	  SUDO=""; if [ "$$(id -u)" != 0 ]; then SUDO="sudo -n"; fi; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; } >/dev/null \
	  || { echo "error: could not install dataset-fashion-mnist (needs apt-get and root); install it by hand: apt-get install dataset-fashion-mnist, or put the IDX files under data/fashion_mnist/" >&2; exit 1; }; \
	fi

demo: install  ## Fashion-MNIST, IPC 5, CPU: 3 quick FADRM+ teachers (cached) → RETA and FADRM+ sets → KD students vs a random subset → table + topology plot
	BIN=$(BIN) DEMO_IPC=$(DEMO_IPC) DEMO_TEACHER_EPOCHS=$(DEMO_TEACHER_EPOCHS) bash scripts/demo.sh

test: install  ## run the fast test suite (one worker per core: TEST_WORKERS=1 for a single process)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: install  ## run the slow checks only
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install  ## ruff
	$(BIN)/ruff check src tests benchmarks experiments

table1: install  ## Table 1 → outputs/tables/table1/ (SCALE=cpu: Fashion-MNIST on this machine; SCALE=paper: CIFAR-100 … ImageNet-1K on a cluster)
ifeq ($(SCALE),cpu)
	$(BIN)/reta-run -m +experiment=table1_cpu $(ARGS)
	$(REPORT) inputs=[multirun/table1_cpu] out=$(TABLES)/table1/results_cpu
else
	for d in cifar100 tiny_imagenet imagenette imagewoof imagenet1k; do \
	  $(BIN)/reta-run -m +experiment=table1_paper dataset=$$d $(ARGS) || exit 1; done
	$(REPORT) inputs=[multirun/table1_paper] out=$(TABLES)/table1/results_paper published=experiments/table1/published.csv
endif

table2: install  ## Table 2, cross-architecture: RDED, EDC, CV-DD, FADRM+, RETA at IPC 10 × eval_pool=cross_arch (SCALE=cpu) → outputs/tables/table2/
	$(BIN)/reta-run -m +experiment=table2_$(SCALE) $(ARGS)
	$(BIN)/reta-evaluate +experiment=table2_$(SCALE) ipc=10 baseline=true seeds=[0,1,2] resume=true \
	  paths.output_dir=multirun/table2_$(SCALE)/random_ipc10
	$(REPORT) inputs=[multirun/table2_$(SCALE)] out=$(TABLES)/table2/results_$(SCALE)

table3: install  ## Table 3, the DRC/PTA ablation (SCALE=cpu) → outputs/tables/table3/
	$(BIN)/reta-run -m +experiment=table3_$(SCALE) $(ARGS)
	$(REPORT) inputs=[multirun/table3_$(SCALE)] out=$(TABLES)/table3/results_$(SCALE)

table4: install  ## Table 4, corruption robustness (SCALE=cpu: Fashion-MNIST IPC 10, 15 corruptions x 5 severities) → outputs/tables/table4/
	$(BIN)/reta-run -m +experiment=table4_$(SCALE) $(ARGS)
	$(REPORT) inputs=[multirun/table4_$(SCALE)] out=$(TABLES)/table4/results_$(SCALE) side_by_side=[kd,hard]

fig6: install  ## Figure 6, class-incremental learning with distilled vs random replay memories (SCALE=cpu) → outputs/tables/fig6/
	$(BIN)/reta-run -m +experiment=fig6_$(SCALE) $(ARGS)
	$(REPORT) inputs=[multirun/fig6_$(SCALE)] out=$(TABLES)/fig6/results_$(SCALE)

# the sweeps run without the random subset (baseline=false); the plots take its band from the committed baseline runs
FIG4_BAND_cpu := ,experiments/random_baseline/runs/random_ipc10
fig4: install  ## Figure 4: λ (DRC) and λ_topo (PTA) sweeps with error bars (SCALE=cpu) → outputs/tables/fig4/
	$(BIN)/reta-run -m +experiment=fig4_lambda_$(SCALE) $(ARGS)
	$(REPORT) inputs=[multirun/fig4_lambda_$(SCALE)$(FIG4_BAND_$(SCALE))] out=$(TABLES)/fig4/lambda_$(SCALE) \
	  plot.x=residual.anchors.lam "plot.title='RETA: DRC weight λ ($(SCALE) scale, 3 seeds)'"
	$(BIN)/reta-run -m +experiment=fig4_topo_$(SCALE) $(ARGS)
	$(REPORT) inputs=[multirun/fig4_topo_$(SCALE)$(FIG4_BAND_$(SCALE))] out=$(TABLES)/fig4/topo_$(SCALE) \
	  plot.x=callbacks.pta.lam_topo "plot.title='RETA: PTA weight λ_topo ($(SCALE) scale, 3 seeds)'"

FIG5_ARGS ?=
FIG5_IPC ?= 10
fig5: install  ## Figure 5: synthesis time and peak memory per image of SRe2L, RDED, EDC, CV-DD, FADRM, FADRM+, RETA → experiments/fig5/ipc$(FIG5_IPC)/
	nice -n 10 $(BIN)/python benchmarks/bench_fig5.py --ipc $(FIG5_IPC) --out experiments/fig5/ipc$(FIG5_IPC) $(FIG5_ARGS)

published: install  ## DC/DSA/DM/MTT vs their published Fashion-MNIST numbers (protocol=dc) → outputs/tables/published
	$(REPORT) inputs=[experiments/published/runs] out=$(TABLES)/published/results \
	  published=experiments/published/published.csv

# the paper grid at toy budgets on generated data (ImageNet + CIFAR layouts, local weight files): docs/paper_scale.md
SMOKE_DIR ?= $(shell mktemp -d -t reta-smoke-XXXXXX)/smoke
smoke-paper: install  ## table1_paper grid (SRe2L, FADRM, FADRM+, RETA) + DM paper configs, debug=smoke, + reta-report
	nice -n 10 $(BIN)/python benchmarks/smoke_paper.py --out $(SMOKE_DIR)

bench-loading: install  ## images/s of the file-dataset loaders (2,000 generated 224-px JPEGs) vs torchvision
	nice -n 10 $(BIN)/python benchmarks/bench_loading.py $(ARGS)

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .cache
