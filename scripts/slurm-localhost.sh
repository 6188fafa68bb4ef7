#!/usr/bin/env bash
# A real Slurm, end to end, on this machine: starts a one-node cluster from Debian's packages
# (slurm-wlm 22.05 and munge; ProctrackType=proctrack/linuxproc and TaskPlugin=task/none, so no
# cgroups are needed), submits the script `minerva fleet slurm` writes for a 3-shard simulated
# pipeline, waits for the merge job, checks the merged report, and stops the cluster.
#
#   scripts/slurm-localhost.sh            # MINERVA_BIN=path/to/minerva to use a built binary
#
# It needs root (or sudo) to install the packages and run the daemons; without either it says
# so and exits 0 without testing. scripts/test.sh runs it after the cargo tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "slurm-localhost: SKIPPED: needs root or password-less sudo to run slurmctld, slurmd and munged"
        exit 0
    fi
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 ||
    ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    echo "slurm-localhost: installing slurmctld, slurmd, slurm-client and munge"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

bin=${MINERVA_BIN:-}
if [ -z "$bin" ]; then
    cargo build --locked --quiet
    bin=$root_dir/target/debug/minerva
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d /tmp/minerva-slurm.XXXXXX)
chmod 755 "$work"
ok=0
cleanup() {
    # The daemons write their pid files; the work directory goes only after a pass.
    local stopped=()
    for f in "$work"/slurmctld.pid "$work"/slurmd.pid "$work"/munge/munged.pid; do
        if [ -f "$f" ]; then
            stopped+=("$(cat "$f")")
            "${sudo[@]}" kill "${stopped[-1]}" 2>/dev/null || true
        fi
    done
    # They take a moment to shut down; a next run reuses their ports.
    for p in "${stopped[@]}"; do
        for _ in $(seq 50); do
            "${sudo[@]}" kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
    done
    if [ "$ok" = 1 ]; then rm -rf "$work"; else echo "slurm-localhost: logs kept in $work" >&2; fi
}
trap cleanup EXIT

# munge: a fresh key, its own socket, run as root (--force: this is a throwaway cluster).
mkdir -p "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
chmod 700 "$work/munge"
"${sudo[@]}" munged --force --key-file="$work/munge/munge.key" \
    --socket="$work/munge/munge.socket" --pid-file="$work/munge/munged.pid" \
    --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed"

cpus=$(nproc)
mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
host=$(hostname -s)
mkdir -p "$work/state" "$work/spool"
cat >"$work/slurm.conf" <<EOF
ClusterName=minerva-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf
"${sudo[@]}" env SLURM_CONF="$SLURM_CONF" slurmctld
"${sudo[@]}" env SLURM_CONF="$SLURM_CONF" slurmd

# The node comes up idle within seconds.
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 1
done
if [ "$state" != idle ]; then
    echo "slurm-localhost: the node did not come up (state: ${state:-none})" >&2
    tail -20 "$work/slurmctld.log" "$work/slurmd.log" >&2 || true
    exit 1
fi
echo "slurm-localhost: one-node cluster up ($host, $cpus CPUs)"

# The pipeline: the simulated fixture (6 bench jobs), 3 shards; results under $work/results.
"$bin" fleet slurm tests/fixtures/pipelines/valid/simulated.yaml --shards 3 \
    --out "$work/results" --minerva "$bin" --time 00:10:00 -o "$work/fleet.sh"
submitted=$(bash "$work/fleet.sh")
echo "slurm-localhost: $submitted"
merge=$(echo "$submitted" | sed -n 's/.*merge job \([0-9]*\).*/\1/p')
[ -n "$merge" ] || { echo "slurm-localhost: no merge job id in: $submitted" >&2; exit 1; }

state=
for _ in $(seq 300); do
    state=$(scontrol show job "$merge" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
    sleep 1
done
if [ "$state" != COMPLETED ]; then
    echo "slurm-localhost: the merge job ended ${state:-unknown}" >&2
    squeue >&2 || true
    tail -n 30 "$work"/results/slurm-logs/*.log >&2 || true
    exit 1
fi

report="$work/results/merged/simulated-$merge/report.md"
fail=0
check() {
    if ! grep -qF -- "$1" "$report"; then
        echo "slurm-localhost: the merged report lacks: $1" >&2
        fail=1
    fi
}
for sc in short medium code long pp512 tg128; do check "### $sc"; done
check "## Shards"
for k in 1 2 3; do check "| $k/3 | "; done
check "slurm_job="
check "| host | slurm_job | Backend |"
samples=$(wc -l <"$work/results/merged/simulated-$merge/samples.jsonl")
shard_samples=$(cat "$work"/results/shards/simulated/shard-*/samples.jsonl | wc -l)
if [ "$samples" -ne "$shard_samples" ]; then
    echo "slurm-localhost: merged $samples sample lines, the shards hold $shard_samples" >&2
    fail=1
fi
if [ "$fail" -ne 0 ]; then
    cat "$report" >&2
    exit 1
fi
echo "slurm-localhost: ok: 3 array tasks and the merge job completed; $samples samples merged into one report"
ok=1
