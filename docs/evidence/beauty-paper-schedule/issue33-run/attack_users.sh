#!/usr/bin/env bash
# Issue 33: each user's metrics under every attack setting, for every model whose attack the frozen run
# (launch.sh, bad291a) has finished. bad291a's attack writes mean rows only; this repository's `catrec attack
# --users` (the same attacks; its mean rows must equal the frozen run's, which collect.py checks) reruns each
# attack on the frozen run's model and writes the per-user file. Reads /work/run33, writes /work/att33.
#   docs/evidence/beauty-paper-schedule/issue33-run/attack_users.sh [REPO]   (REPO: this clone; default .)
set -euo pipefail
REPO=$(cd "${1:-.}" && pwd)
RUN=/work/run33
OUT=/work/att33
HPARAMS='{"distance": "cosine", "max_k": 5, "max_len": 50, "multi": "joint", "positions": ["first", "middle", "last"], "random_seed": 7, "step_size": 0.1}'
cd "$RUN"
for attacks in $(find results/attacks -name '*.csv' | sort); do
  run=${attacks#results/attacks/}
  run=${run%.csv}
  users="$OUT/results/attack_users/$run.csv.gz"
  [ -e "$users" ] && continue
  IFS=/ read -r dataset model seed method _ <<< "$run"
  mkdir -p "$(dirname "$OUT/results/attacks/$run")" "$(dirname "$OUT/logs/attack/$run")"
  echo "$(date -u +%FT%TZ) attack $run"
  PYTHONPATH="$REPO/src" "$REPO/.venv/bin/python" -m catrec attack --data results/data/beauty \
    --hparams "$HPARAMS" --dataset "$dataset" --model "$model" --method "$method" --device cpu --threads 1 \
    --checkpoint "results/models/$run.pt" --output "$OUT/results/attacks/$run.csv" --users "$users" \
    > "$OUT/logs/attack/$run.log" 2>&1
done
