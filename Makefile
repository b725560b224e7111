# Two commands do all set-up on a fresh clone: `make test` and `make demo`; `make report` then shows the results.
PYTHON ?= python3
# The experiment `make demo` runs and `make report` reports on; `make demo report CONFIG=...` for another.
CONFIG ?= config/smoke.yaml
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slurm demo report lint bench clean

$(STAMP): pyproject.toml envs/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r envs/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

test: install
	$(BIN)/python -m pytest

# The smoke DAG through a one-node SLURM cluster on 127.0.0.1 (root; installs slurm-wlm and munge if missing),
# compared with a local run; the daemons are stopped whatever the outcome.
SLURM_DIR ?= /tmp/catrec-slurm
test-slurm: install
	bash tests/slurm/cluster.sh start $(SLURM_DIR)
	PATH=$(abspath $(BIN)):$$PATH CATREC_SLURM_DIR=$(SLURM_DIR) $(BIN)/python -m pytest -m slurm tests/slurm; \
	status=$$?; bash tests/slurm/cluster.sh stop $(SLURM_DIR); \
	if [ -f $(SLURM_DIR)/listing.txt ]; then cat $(SLURM_DIR)/listing.txt; fi; exit $$status

demo: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores all all --configfile $(CONFIG)

# Reads the outputs a finished run of CONFIG left (`make demo` first); runs nothing.
report: install
	$(BIN)/snakemake --report results/report.html --configfile $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check .
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --lint

bench: install
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf results/* figures/* .snakemake
	touch results/.gitkeep figures/.gitkeep
