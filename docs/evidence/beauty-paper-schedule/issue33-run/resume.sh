#!/usr/bin/env bash
# Issue 33 (and 34, queued behind it): restart the background runs in a new session on the machine that kept
# /work/run33. A new session's ../shared/data/beauty/Beauty.txt has a new mtime (the same bytes), which would
# make Snakemake rerun everything downstream of preprocessing; the finished targets are marked current first
# (`snakemake --touch` on the targets whose files exist: it touches their whole DAG, data and models too),
# then launch.sh resumes every unfinished run from results/state/, issue 34's launch.sh waits for it, and the
# per-user attack reruns (attack_users.sh from /work/frozen-att) follow the finished attacks.
set -euo pipefail
cd /work/run33
export PATH=/work/frozen/.venv/bin:$PATH
SNAKEMAKE=(snakemake --snakefile /work/frozen/Snakefile --configfile /work/run33/config.yaml --cores 1)
"${SNAKEMAKE[@]}" --unlock > /dev/null
DONE=()
while read -r target; do [ -e "$target" ] && DONE+=("$target"); done < targets.txt
"${SNAKEMAKE[@]}" --touch -- "${DONE[@]}" > touch.log 2>&1
nohup nice -n 10 ./launch.sh > run.log 2>&1 &
sleep 30
nohup nice -n 10 ./launch34.sh > run34.log 2>&1 &
cd /work/frozen-att
ATTACK_USERS=docs/evidence/beauty-paper-schedule/issue33-run/attack_users.sh
nohup nice -n 10 bash -c "while pgrep -f 'run33/config.yaml --rerun-incomplete --keep-going --prioritize results/attacks' > /dev/null; do $ATTACK_USERS /work/frozen-att; sleep 300; done; $ATTACK_USERS /work/frozen-att" >> /work/att33/run.log 2>&1 &
