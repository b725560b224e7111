#!/usr/bin/env bash
# Issue 33 background experiment: frozen main bad291a, the paper-schedule config, seed 1.
set -euo pipefail
# Run in a workdir beside ../shared (here /work/run33) holding a copy of ../config.yaml as config.yaml, with
# /work/frozen a git worktree of main bad291a whose .venv `make install` made there; nohup ./launch.sh &.
cd /work/run33
export PATH=/work/frozen/.venv/bin:$PATH
R=results
T=()
for m in gru4rec sasrec; do
  T+=("$R/attacks/beauty/$m/seed1/base.csv" "$R/users/beauty/$m/seed1/base.csv")
done
NEW=("$R/metrics/beauty/gru4rec/seed1/adv_seq/eps10.json" "$R/metrics/beauty/gru4rec/seed1/adv_global/eps10.json"
     "$R/metrics/beauty/sasrec/seed1/adv_linear/eps10.json" "$R/metrics/beauty/sasrec/seed1/adv_global/eps10.json")
for f in "${NEW[@]}"; do u=${f/metrics/users}; T+=("$f" "${u%.json}.csv"); done
for m in gru4rec sasrec; do
  for run in continued adv_cas/eps10; do
    T+=("$R/metrics/beauty/$m/seed1/$run.json" "$R/users/beauty/$m/seed1/$run.csv" "$R/attacks/beauty/$m/seed1/$run.csv")
  done
done
T+=("$R/metrics/beauty/sasrec/seed1/adv_cas/eps5.json" "$R/users/beauty/sasrec/seed1/adv_cas/eps5.csv" "$R/attacks/beauty/sasrec/seed1/adv_cas/eps5.csv")
T+=("$R/users/beauty/gru4rec/seed1/adv_linear/eps10.csv" "$R/attacks/beauty/gru4rec/seed1/adv_linear/eps10.csv")
T+=("$R/users/beauty/sasrec/seed1/adv_seq/eps10.csv" "$R/attacks/beauty/sasrec/seed1/adv_seq/eps10.csv")
printf '%s\n' "${T[@]}" > targets.txt
exec snakemake --snakefile /work/frozen/Snakefile --cores 2 --configfile /work/run33/config.yaml \
  --rerun-incomplete --keep-going --prioritize "${T[@]:0:16}" -- "${T[@]}"
