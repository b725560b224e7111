#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 for `make test-slurm`, from Debian's packages (slurm-wlm, munge).
#   tests/slurm/cluster.sh start DIR   install what is missing, start munged, slurmctld and slurmd; DIR/slurm.conf
#   tests/slurm/cluster.sh stop DIR    stop the daemons started from DIR
# No accounting database: AccountingStorageType=accounting_storage/none. The scheduler's own record of every job
# is the job-completion log (JobCompType=jobcomp/filetxt, DIR/log/jobcomp.log: one line per finished job with its
# JobState and Partition), and Snakemake's SLURM plugin reads live job states with squeue (its documented mode
# for clusters without sacct), which MinJobAge=600 keeps reliable. slurmdbd + MariaDB would add two more daemons
# and a database to CI for a listing the completion log already gives.
# The config is linked to /etc/slurm/slurm.conf, where every SLURM command looks by default: the plugin clears
# SLURM_* variables (SLURM_CONF included) before it calls srun inside a job. An existing /etc/slurm/slurm.conf
# that is not our link is never replaced (this machine is part of a real cluster: stop).
# Partitions: `cpu` (default) and `gpu` on the same node, so the workflow profile's partition routing is exercised;
# the node has no GPU, and the test runs with device cpu (gpu=0).
set -euo pipefail

action=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")

system_conf=/etc/slurm/slurm.conf

stop_daemons() {
    for daemon in slurmd slurmctld; do
        if [[ -f $dir/$daemon.pid ]]; then
            pid=$(cat "$dir/$daemon.pid")
            kill "$pid" 2>/dev/null || true
            # wait for it to exit: a stopping slurmctld still writes its state directory
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            rm -f "$dir/$daemon.pid"
        fi
    done
    if [[ -L $system_conf && $(readlink "$system_conf") == "$dir/slurm.conf" ]]; then
        rm -f "$system_conf"
    fi
}

case $action in
stop)
    stop_daemons
    exit 0
    ;;
start) ;;
*)
    echo "cluster.sh: unknown action '$action' (start or stop)" >&2
    exit 2
    ;;
esac

if [[ $(id -u) -ne 0 ]]; then
    echo "cluster.sh: must run as root (installs packages, starts slurmd)" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munged: Debian's package made the key; start the daemon once per machine, on its default socket.
if ! munge -n >/dev/null 2>&1; then
    mkdir -p /run/munge
    chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
fi

stop_daemons
if [[ -e $system_conf && ! -L $system_conf ]]; then
    echo "cluster.sh: $system_conf exists and is not a test cluster's; not replacing it" >&2
    exit 2
fi
rm -rf "$dir/state" "$dir/spool" "$dir/log"
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
cpus=$(nproc)
memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
cat >"$dir/slurm.conf" <<EOF
ClusterName=catrec-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
MinJobAge=600
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF

mkdir -p "$(dirname "$system_conf")"
ln -sfn "$dir/slurm.conf" "$system_conf"
slurmctld
slurmd -N localhost
for _ in $(seq 30); do
    if sinfo --noheader --states=idle 2>/dev/null | grep -q idle; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "cluster.sh: the node did not become idle in 30 s; logs in $dir/log" >&2
sinfo >&2 || true
exit 1
