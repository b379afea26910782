#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying nearloop's job scripts and for
# tests/test_slurm.py. Needs root and Debian's packages: apt-get install slurm-wlm munge.
#
#   sudo docs/slurm/local-cluster.sh up DIR      # start munged, slurmctld and slurmd
#   export SLURM_CONF=DIR/slurm.conf             # what `up` prints last
#   sbatch --wait docs/slurm/nearloop.sbatch
#   sudo docs/slurm/local-cluster.sh down DIR    # stop them, remove DIR
#
# Everything the cluster owns lives in DIR: its configuration, its own munge key and
# socket, state, spool, logs and pid files. Nothing under /etc is touched and the system's
# munged is not used, so two clusters (two DIRs) never share anything; the daemons' ports
# are picked free at `up`, and job ids start at a random number (a job's broker port is
# derived from its id; see nearloop.sbatch). The node claims NL_CPUS CPUs (default 8;
# SlurmdParameters=config_overrides lets it claim more than it has), NL_MEM_MB of memory
# (default 8192) and one qpu GRES (gres.conf beside this script). NL_FAKE_GPU=1 also gives
# it a stand-in GPU GRES (File=/dev/null: nothing can run on it), to check how a job
# picks its decoders when it is given a GPU.
#
# Exit status: 0 done; 1 a daemon did not come up (its log is printed); 2 usage.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UP_TIMEOUT_S="${NL_UP_TIMEOUT_S:-60}"

die() { echo "error: $*" >&2; exit "${2:-2}"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds.
wait_until() {
    local limit="$1" what="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "error: $what within ${limit} s" >&2
            return 1
        fi
        sleep 0.2
    done
}

show_logs() {
    local dir="$1" log
    for log in "$dir"/log/*.log; do
        [[ -f "$log" ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
    done
}

write_conf() {
    local dir="$1" node cpus mem
    node="$(hostname -s)"
    cpus="${NL_CPUS:-8}"
    mem="${NL_MEM_MB:-8192}"
    local types=qpu gres=qpu:1
    [[ "${NL_FAKE_GPU:-0}" == 1 ]] && { types=qpu,gpu; gres=qpu:1,gpu:1; }
    cat >"$dir/slurm.conf" <<EOF
# Written by docs/slurm/local-cluster.sh: a one-node cluster that lives in $dir.
ClusterName=nl$((RANDOM % 100000))
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
FirstJobId=$((1000 + RANDOM % 50000))
# No cgroups in a container or a VM without delegation: steps are tracked by their
# process tree, which is what scancel kills (a real cluster uses proctrack/cgroup).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
KillWait=5
GresTypes=$types
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=$gres State=UNKNOWN
PartitionName=nl Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    cp "$here/gres.conf" "$dir/gres.conf"
    [[ "${NL_FAKE_GPU:-0}" == 1 ]] && echo "Name=gpu File=/dev/null" >>"$dir/gres.conf"
    return 0
}

up() {
    local dir="$1"
    [[ "$(id -u)" == 0 ]] || die "local-cluster.sh up needs root (slurmd runs jobs as their users)"
    local bin
    for bin in munged mungekey slurmctld slurmd sinfo; do
        command -v "$bin" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$bin" >/dev/null \
            || die "$bin not found: apt-get install -y slurm-wlm munge"
    done
    export PATH="$PATH:/usr/sbin"
    [[ -e "$dir/slurm.conf" ]] && die "$dir already holds a cluster: run down first"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    mkdir -p "$dir"/{munge,state,spool,run,log}
    # Users' sbatch reads slurm.conf and talks to munged's socket; the key is root's alone.
    chmod 0755 "$dir" "$dir/munge"
    mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null
    chmod 0600 "$dir/munge/munge.key"
    # --force: the folders above DIR (/tmp) are world-writable, which munged would refuse.
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    write_conf "$dir"
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF" || { show_logs "$dir"; die "slurmctld did not start" 1; }
    slurmd -f "$SLURM_CONF" || { show_logs "$dir"; die "slurmd did not start" 1; }
    if ! wait_until "$UP_TIMEOUT_S" "the node was not idle" node_idle; then
        show_logs "$dir"
        sinfo -N -l >&2 || true
        exit 1
    fi
    echo "export SLURM_CONF=$SLURM_CONF"
}

node_idle() {
    [[ "$(sinfo -h -N -o '%t' 2>/dev/null)" == idle ]]
}

down() {
    local dir="$1" name pid
    [[ -d "$dir" ]] || return 0
    dir="$(cd "$dir" && pwd)"
    if [[ -e "$dir/slurm.conf" ]]; then
        # Jobs first, so that slurmd kills their steps while it still runs.
        export SLURM_CONF="$dir/slurm.conf"
        scancel --quiet --partition=nl 2>/dev/null || true
        wait_until 30 "jobs still in the queue" no_jobs || true
    fi
    for name in slurmd slurmctld munged; do
        pid="$(cat "$dir/run/$name.pid" 2>/dev/null || true)"
        [[ -n "$pid" ]] || continue
        kill -TERM "$pid" 2>/dev/null || continue
        if ! wait_until 20 "$name ($pid) did not exit" gone "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_until 10 "$name ($pid) survived SIGKILL" gone "$pid" || true
        fi
    done
    rm -rf "$dir"
}

gone() { ! kill -0 "$1" 2>/dev/null; }

no_jobs() {
    local left
    left="$(squeue -h -o %i 2>&1)" && [[ -z "$left" ]]
}

case "${1:-}" in
    up) [[ $# == 2 ]] || die "usage: local-cluster.sh up DIR"; up "$2" ;;
    down) [[ $# == 2 ]] || die "usage: local-cluster.sh down DIR"; down "$2" ;;
    *) die "usage: local-cluster.sh up|down DIR" ;;
esac
