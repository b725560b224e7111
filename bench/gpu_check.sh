#!/usr/bin/env bash
# The checks a lent GPU is for, in one script of at most ~8 minutes (`make gpu-check`; bench/README.md):
#   1. nvidia-smi;  2. pytest -m gpu;  3. bench/paper_cost.py --json;  4. bench/train_speed.py;
#   5. a short Snakemake run on Beauty (pretraining + one adversarial fine-tuning), its wall time and logs.
# Every result lands in OUT as one file per check (the device tool returns at most 8 files). A failing check
# is recorded in summary.txt and the others still run; the exit status says whether all passed.
# Rehearse on the CPU first: make gpu-check DEVICE=cpu (then paper_cost runs with --quick).
set -uo pipefail
OUT=${OUT:?set OUT to the results folder}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-.venv/bin/python}
BEAUTY=${BEAUTY:-../shared/data/beauty/Beauty.txt}
PAPER_COST_FLAGS=${PAPER_COST_FLAGS:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BEAUTY=$(realpath "$BEAUTY")
REPO=$(pwd)
# Absolute, unresolved (a venv's python is a link out of the venv): jobs run in another directory and find
# `python` on PATH through its folder.
case $PYTHON in /*) ;; */*) PYTHON=$REPO/$PYTHON ;; *) PYTHON=$(command -v "$PYTHON") ;; esac
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$OUT/summary.txt"

check() {  # check NAME LOGFILE COMMAND...: run COMMAND, its output to LOGFILE, its status and time to summary
    local name=$1 log=$2 started status
    shift 2
    started=$(date +%s%N)
    "$@" >"$log" 2>&1
    status=$?
    printf '%-12s exit %-3s %6d ms\n' "$name" "$status" $((($(date +%s%N) - started) / 1000000)) \
        | tee -a "$OUT/summary.txt"
    return $status
}

snakemake_run() {  # pretraining + adv_cas fine-tuning of SASRec on Beauty, a few epochs, in a fresh workdir
    local workdir
    workdir=$(mktemp -d)
    "$PYTHON" - "$REPO/bench/gpu_check.yaml" "$workdir/config.yaml" "$BEAUTY" "$DEVICE" <<'PY' || return 1
import sys, yaml
source, target, beauty, device = sys.argv[1:]
config = yaml.safe_load(open(source))
config["datasets"]["beauty"]["source"]["path"] = beauty
config["device"] = device
yaml.safe_dump(config, open(target, "w"), sort_keys=False)
PY
    local status=0
    PATH="$(dirname "$PYTHON"):$PATH" "$PYTHON" -m snakemake --snakefile "$REPO/Snakefile" --directory "$workdir" \
        --configfile "$workdir/config.yaml" --cores 4 results/metrics/beauty/sasrec/seed1/adv_cas/eps10.json \
        || status=$?
    for log in $(find "$workdir/logs" -name '*.log' | sort); do echo "== $log"; cat "$log"; done
    for tsv in $(find "$workdir/benchmarks" -name '*.tsv' | sort); do echo "== $tsv"; cat "$tsv"; done
    rm -rf "$workdir"
    return $status
}

failed=0
if command -v nvidia-smi >/dev/null; then nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1; else
    echo "no nvidia-smi on this machine" >"$OUT/nvidia-smi.txt"; fi
check pytest-gpu "$OUT/pytest-gpu.txt" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests || failed=1
# shellcheck disable=SC2086  # PAPER_COST_FLAGS holds several flags
check paper_cost "$OUT/paper_cost.txt" "$PYTHON" bench/paper_cost.py --device "$DEVICE" $PAPER_COST_FLAGS \
    --json "$OUT/paper_cost.json" || failed=1
check train_speed "$OUT/train_speed.txt" "$PYTHON" bench/train_speed.py --device "$DEVICE" --quick \
    --datasets beauty || failed=1
check snakemake "$OUT/snakemake.txt" snakemake_run || failed=1
exit $failed
