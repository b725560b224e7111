# Two commands do all set-up on a fresh clone: `make test` and `make demo`; `make report` then shows the results.
PYTHON ?= python3
# The experiment `make demo` runs and `make report` reports on; `make demo report CONFIG=...` for another.
CONFIG ?= config/smoke.yaml
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slurm demo report lint bench mutate gpu-prepare gpu-check clean

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

# Mutation testing of the modules that hold the paper's math ([tool.mutmut] in pyproject.toml: the fast unit
# tests only), not part of `make test`: the mutants of each of MODULES in turn (`make mutate MODULES=cascade`
# for one), from a fresh mutants/. Writes mutants/summary.csv (module, mutants, killed, survived, timed_out,
# other, seconds) and prints it; fails when a survivor is not listed in tests/MUTANTS.md. mutants/<module>.log
# holds mutmut's output; `$(BIN)/mutmut show NAME` a mutant's diff. MUTATE_JOBS: mutants tested at once.
MODULES ?= cascade adversarial losses metrics attack
MUTATE_JOBS ?= $(shell nproc)
mutate: install
	rm -rf mutants && mkdir mutants
	for module in $(MODULES); do \
		start=$$(date +%s); \
		$(BIN)/mutmut run --max-children $(MUTATE_JOBS) "catrec.$$module.*" > mutants/$$module.log 2>&1 \
			|| { tail -n 30 mutants/$$module.log; exit 1; }; \
		echo "$$module,$$(( $$(date +%s) - start ))" >> mutants/seconds.csv; \
	done
	$(BIN)/python tests/mutation_summary.py $(MODULES)

# For a lent GPU (bench/README.md says how): `make gpu-prepare` here, beside ../shared and the package registry,
# fills GPU_DIR with what the GPU machine lacks (the wheels of snakemake and jsonschema for its Python, and
# Beauty.txt); the device tool carries GPU_DIR there, where `make gpu-check` runs each check under its own
# timeout, within 8 minutes, on the machine's python3 (or .venv/bin/python, or GPU_PYTHON). Rehearse on the
# CPU: make gpu-check DEVICE=cpu (tests/test_gpu_check.py does it on a bare copy; SCALE=ci shrinks the work).
GPU_DIR ?= .gpu
GPU_PYTHON_VERSION ?= 3.12
BEAUTY ?= ../shared/data/beauty/Beauty.txt
gpu-prepare: install
	$(BIN)/python bench/gpu_prepare.py --out $(GPU_DIR) --python-version $(GPU_PYTHON_VERSION) --beauty $(BEAUTY)

OUT ?= gpu-check
DEVICE ?= cuda
SCALE ?= full
GPU_PYTHON ?=
gpu-check:
	OUT=$(OUT) DEVICE=$(DEVICE) GPU_DIR=$(GPU_DIR) SCALE=$(SCALE) CHECK_PYTHON=$(GPU_PYTHON) bash bench/gpu_check.sh

clean:
	rm -rf results/* figures/* .snakemake
	touch results/.gitkeep figures/.gitkeep
