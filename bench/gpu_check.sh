#!/usr/bin/env bash
# The checks a lent GPU is for, in one script that ends within 8 minutes (`make gpu-check`; bench/README.md).
# It runs on a bare copy of the repository: the tracked files plus GPU_DIR (default .gpu, filled here by
# `make gpu-prepare`: the wheels the machine lacks and Beauty.txt), no .venv, no ../shared, no registry.
#   0. nvidia-smi;  1. install GPU_DIR's wheels into a temp dir;  2. pytest -m gpu on the files holding GPU tests;
#   3. bench/train_speed.py --quick;  4. a short Snakemake run on Beauty (pretraining + adv_cas fine-tuning);
#   5. bench/paper_cost.py --json.
# Cheapest first, each under its own `timeout` (seconds: CHECK_SECONDS_<name>), each into one file under OUT;
# summary.txt gets one `exit` line per check (124: its time ran out; on the CPU each limit is tripled). A
# failing check does not stop the others; the exit status says whether all passed. Rehearse on the CPU:
# make gpu-check DEVICE=cpu (tests/test_gpu_check.py does it on a bare copy). SCALE=ci shrinks each check's
# work, never skipping one.
set -uo pipefail
OUT=${OUT:?set OUT to the results folder}
DEVICE=${DEVICE:-cuda}
GPU_DIR=${GPU_DIR:-.gpu}
BEAUTY=${BEAUTY:-$GPU_DIR/Beauty.txt}
SCALE=${SCALE:-full}
REPO=$(pwd)
# The interpreter: CHECK_PYTHON, else the project's .venv where there is one, else the machine's python3.
PYTHON=${CHECK_PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Absolute, unresolved (a venv's python is a link out of the venv).
case $PYTHON in /*) ;; */*) PYTHON=$REPO/$PYTHON ;; *) PYTHON=$(command -v "$PYTHON") ;; esac
if [ ! -x "$PYTHON" ]; then echo "gpu-check: no Python interpreter (.venv/bin/python or python3)" >&2; exit 2; fi
if [ ! -f "$BEAUTY" ]; then
    echo "gpu-check: $BEAUTY: no Beauty file; run \`make gpu-prepare\` beside ../shared and carry $GPU_DIR" >&2
    exit 2
fi
case $SCALE in full | ci) ;; *) echo "gpu-check: SCALE must be full or ci, not '$SCALE'" >&2; exit 2 ;; esac
# The limits are the GPU machine's (8 minutes in all); a CPU rehearsal does the same work slower.
if [ "$DEVICE" = cpu ]; then LIMIT_FACTOR=3; else LIMIT_FACTOR=1; fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BEAUTY=$(realpath "$BEAUTY")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The rules run `python -m catrec`; the machine may have only `python3`: a `python` that is this interpreter.
mkdir "$WORK/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON" >"$WORK/bin/python"
chmod +x "$WORK/bin/python"
export PATH="$WORK/bin:$PATH" PYTHONPATH="$REPO/src:$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$OUT/summary.txt"
# The short run's config (bench/gpu_check.yaml) with this Beauty path and device; at SCALE=ci one epoch each.
CONFIG=$WORK/gpu_check.yaml
"$PYTHON" - "$REPO/bench/gpu_check.yaml" "$CONFIG" "$BEAUTY" "$DEVICE" "$SCALE" <<'PY' || exit 2
import sys, yaml
source, target, beauty, device, scale = sys.argv[1:]
config = yaml.safe_load(open(source))
config["datasets"]["beauty"]["source"]["path"] = beauty
config["device"] = device
if scale == "ci":
    config["train"].update(pretrain_epochs=1, finetune_epochs=1)
yaml.safe_dump(config, open(target, "w"), sort_keys=False)
PY
export OUT DEVICE GPU_DIR BEAUTY SCALE REPO PYTHON WORK CONFIG

check() {  # check NAME SECONDS COMMAND: COMMAND (a string) under `timeout`, output to OUT/NAME.txt, a summary line
    local name=$1 limit=$2 command=$3 override started status
    override=CHECK_SECONDS_${name//-/_}
    limit=${!override:-$((limit * LIMIT_FACTOR))}
    started=$(date +%s%N)
    timeout --kill-after=5 "$limit" bash -c "$command" >"$OUT/$name.txt" 2>&1
    status=$?
    printf '%-12s exit %-3s %6d ms (limit %s s)\n' "$name" "$status" $((($(date +%s%N) - started) / 1000000)) \
        "$limit" | tee -a "$OUT/summary.txt"
    return $status
}

install_wheels() {  # the wheels the image lacks, into $WORK/site (on PYTHONPATH); none with a .venv
    local wheels=("$GPU_DIR"/wheels/*.whl)
    if [ ! -e "${wheels[0]}" ]; then echo "no wheels in $GPU_DIR/wheels: using $PYTHON's packages"; return 0; fi
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
        "${wheels[@]}" || return 1
    # For the record only: a version the wheels need that the image holds at another version shows here.
    "$PYTHON" -m pip check || true
    "$PYTHON" -c 'import snakemake, jsonschema; print("snakemake", snakemake.__version__)'
}

gpu_tests() {  # only the files that hold GPU tests: collecting the others needs packages the machine lacks
    local files
    mapfile -t files < <(grep -l 'pytest.mark.gpu' tests/test_*.py)
    "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider "${files[@]}"
}

snakemake_run() {  # pretraining + adv_cas fine-tuning of SASRec on Beauty, a few epochs, in a fresh workdir
    local workdir=$WORK/snakemake status=0
    mkdir "$workdir"
    "$PYTHON" -m snakemake --snakefile "$REPO/Snakefile" --directory "$workdir" --configfile "$CONFIG" \
        --cores 4 results/metrics/beauty/sasrec/seed1/adv_cas/eps10.json || status=$?
    for log in $(find "$workdir/logs" -name '*.log' | sort); do echo "== $log"; cat "$log"; done
    for tsv in $(find "$workdir/benchmarks" -name '*.tsv' | sort); do echo "== $tsv"; cat "$tsv"; done
    for json in $(find "$workdir/results/metrics" -name '*.json' | sort); do echo "== $json"; cat "$json"; done
    return $status
}

paper_cost() {  # the whole paper's projection; at SCALE=ci the short run's config (Beauty, SASRec) instead
    local flags=(--device "$DEVICE" --beauty "$BEAUTY" --json "$OUT/paper_cost.json")
    if [ "$DEVICE" = cpu ]; then flags+=(--quick); fi
    if [ "$SCALE" = ci ]; then flags+=(--configfile "$CONFIG"); fi
    "$PYTHON" bench/paper_cost.py "${flags[@]}"
}

train_speed() {
    local flags=(--device "$DEVICE" --quick --datasets beauty --beauty "$BEAUTY")
    if [ "$SCALE" = ci ]; then flags+=(--models sasrec); fi
    "$PYTHON" bench/train_speed.py "${flags[@]}"
}

export -f install_wheels gpu_tests train_speed snakemake_run paper_cost
failed=0
check nvidia-smi 10 'if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi here"; fi' \
    || failed=1
check install 50 install_wheels || failed=1
check pytest-gpu 80 gpu_tests || failed=1
check train_speed 60 train_speed || failed=1
check snakemake 130 snakemake_run || failed=1
check paper_cost 110 paper_cost || failed=1
exit $failed
