#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests: bash tools/local_slurm.sh up DIR | down DIR.
# up installs Debian's slurmctld, slurmd, slurm-client and munge if missing (needs root and apt), writes
# DIR/slurm.conf (this host, its CPUs, two GPUs whose gres File= is a link to /dev/null, proctrack/pgid so no
# process outlives its job, MinJobAge so exit codes stay visible without accounting), starts munged, slurmctld
# and slurmd with their pid files in DIR, and prints the line to source: export SLURM_CONF=DIR/slurm.conf.
# down stops only the daemons whose pid files are in DIR.
set -euo pipefail
cmd=${1:?usage: bash tools/local_slurm.sh up|down DIR}; dir=$(realpath -m "${2:?usage: bash tools/local_slurm.sh up|down DIR}")
stop() {  # its jobs (each batch script's process group and its slurmstepd), then its three daemons
  local p f pid i
  for p in $(pgrep -f "$dir/spool/" || true); do
    kill -9 "$(ps -o ppid= -p "$p" | tr -d ' ')" -- "-$(ps -o pgid= -p "$p" | tr -d ' ')" 2>/dev/null || true
  done
  for f in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    [ -f "$f" ] || continue; pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
    for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
if [ "$cmd" = down ]; then stop; exit 0; fi
[ "$cmd" = up ] || { echo "local_slurm.sh: up or down, not $cmd" >&2; exit 2; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "local_slurm.sh: SLURM is not installed and apt-get as root is not available" >&2; exit 3; }
  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1; }
  install || { apt-get update -q >/dev/null 2>&1 && install; } ||
    { echo "local_slurm.sh: apt-get could not install slurmctld, slurmd, slurm-client and munge" >&2; exit 3; }
fi
mkdir -p "$dir"/state "$dir"/spool "$dir"/munge
host=$(hostname -s); cpus=$(nproc)
ln -sf /dev/null "$dir"/gpu0; ln -sf /dev/null "$dir"/gpu1
cat > "$dir"/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6917}
SlurmdPort=${SLURMD_PORT:-6918}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
JobRequeue=1
MpiDefault=none
NodeName=$host CPUs=$cpus Gres=gpu:2 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
printf 'Name=gpu File=%s/gpu0\nName=gpu File=%s/gpu1\n' "$dir" "$dir" > "$dir"/gres.conf
munged --force --socket="$dir"/munge/munge.socket --pid-file="$dir"/munged.pid --log-file="$dir"/munged.log \
  --seed-file="$dir"/munge/seed
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$dir"/slurm.conf
slurmd -f "$dir"/slurm.conf
for i in $(seq 1 30); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 1; done
sinfo -h -o %T | grep -qx idle || { echo "local_slurm.sh: the node did not come up (see $dir/*.log)" >&2; stop; exit 3; }
echo "export SLURM_CONF=$dir/slurm.conf"
