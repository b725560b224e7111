#!/usr/bin/env bash
# Issues 33 and 34 (issue 34's run follows 33's): restart the background runs in a new session on the
# machine that kept /work/run33. A new session's ../shared/data/beauty/Beauty.txt has a new mtime (the same
# bytes), which would make Snakemake rerun everything downstream of preprocessing; the finished targets are
# marked current first (`snakemake --touch` on the targets whose files exist: it touches their whole DAG,
# data and models too), then launch.sh resumes every unfinished run from results/state/, issue 34's
# launch.sh waits for it, and the per-user attack reruns (attack_users.sh from /work/frozen-att) follow the
# finished attacks.
set -euo pipefail
cd /work/run33
export PATH=/work/frozen/.venv/bin:$PATH
# SASRec trains differently on the AVX2 kind: resuming its runs on another kind would mix kinds in one run.
capability=$(python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')
if [ "$capability" != AVX512 ]; then
  echo "resume.sh: this CPU is $capability, the runs in /work/run33 trained on AVX512; not resuming" >&2
  exit 1
fi
SNAKEMAKE=(snakemake --snakefile /work/frozen/Snakefile --configfile /work/run33/config.yaml --cores 1)
"${SNAKEMAKE[@]}" --unlock > /dev/null
DONE=()
# Issue 34's finished targets and every finished model too: a pretrained seed none of whose targets is
# done yet would otherwise be retrained.
for target in $(cat targets.txt targets34.txt 2> /dev/null) $(find results/models -name '*.pt'); do
  [ -e "$target" ] && DONE+=("$target")
done
"${SNAKEMAKE[@]}" --touch -- "${DONE[@]}" > touch.log 2>&1
nohup nice -n 10 ./launch.sh > run.log 2>&1 &
sleep 30
nohup nice -n 10 ./launch34.sh > run34.log 2>&1 &
# The per-user attack reruns follow the finished attacks while issue 33's run lasts, then once more
# (result[s]: the pattern must not match this loop's own command line).
setsid nohup nice -n 10 bash -c "cd /work/frozen-att
  A=docs/evidence/beauty-paper-schedule/issue33-run/attack_users.sh
  while pgrep -f 'run33/config.yaml --rerun-incomplete --keep-going --prioritize result[s]/attacks' > /dev/null; do
    \$A /work/frozen-att; sleep 300
  done
  \$A /work/frozen-att" >> /work/att33/run.log 2>&1 < /dev/null &
