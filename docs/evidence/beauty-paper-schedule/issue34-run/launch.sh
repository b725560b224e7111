#!/usr/bin/env bash
# Issue 34 background experiment: frozen main bad291a, the paper-schedule config (../config.yaml), SASRec,
# seeds 2 and 3 (the seed-1 set: base, continued, adv_cas at eps 10 and 5, adv_seq at eps 10; and adv_global
# at eps 10, so that adv_global too has both eps on every seed) and adv_seq / adv_global at eps 5 for seeds
# 1-3, with their per-user metrics. It runs in issue 33's workdir (/work/run33:
# the seed-1 SASRec pretraining of this CPU kind is there) and starts only when issue 33's run has ended:
# never two long experiments at once on 2 cores.
set -euo pipefail
cd /work/run33
export PATH=/work/frozen/.venv/bin:$PATH
while pgrep -f "snakemake --snakefile /work/frozen/Snakefile --cores 2 --configfile /work/run33/config.yaml --rerun-incomplete --keep-going --prioritize results/attacks" > /dev/null; do
  sleep 60
done
R=results/metrics/beauty/sasrec
U=results/users/beauty/sasrec
# Session 11's order: the runs that the issue's comparison of adv_cas needs (seeds 2 and 3: base, continued,
# adv_cas at eps 10 and 5, adv_seq at eps 10) come first, then the runs for "each method at its better eps".
# Seed 1's runs are all done; the order changes which runs finish first, not what any run computes.
FIRST=()
for seed in 2 3; do
  for run in base continued adv_cas/eps10 adv_cas/eps5 adv_seq/eps10; do
    FIRST+=("$R/seed$seed/$run.json" "$U/seed$seed/$run.csv")
  done
done
THEN=()
for seed in 1 2 3; do
  for run in adv_seq/eps5 adv_global/eps5; do THEN+=("$R/seed$seed/$run.json" "$U/seed$seed/$run.csv"); done
done
for seed in 2 3; do THEN+=("$R/seed$seed/adv_global/eps10.json" "$U/seed$seed/adv_global/eps10.csv"); done
printf '%s\n' "${FIRST[@]}" "${THEN[@]}" > targets34.txt
exec snakemake --snakefile /work/frozen/Snakefile --cores 2 --configfile /work/run33/config.yaml \
  --rerun-incomplete --keep-going --prioritize "${FIRST[@]}" -- "${FIRST[@]}" "${THEN[@]}"
