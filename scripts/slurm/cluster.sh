#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/cli/slurm.rs and for trying the scripts of
# this folder without a real cluster. Needs root (Debian/Ubuntu: installs slurm-wlm and munge with
# apt-get when they are missing, about a minute).
#
#   scripts/slurm/cluster.sh start DIR [CPUS]   config DIR/slurm.conf, daemons' state and logs in DIR;
#                                               waits until the node is idle, then prints
#                                               `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm/cluster.sh stop DIR           cancels its jobs, stops the daemons it started
#   scripts/slurm/cluster.sh install            only installs slurm-wlm and munge if missing
#
# CPUS (default 4) is what slurmd announces, more than a small machine has
# (SlurmdParameters=config_overrides), so that a 3-task array with 1 CPU per task runs at once.
# The ports are fixed in slurm.conf.template (16817, 16818): one such cluster per machine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { echo "usage: $0 start DIR [CPUS] | stop DIR | install" >&2; exit 2; }
say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

have_slurm() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && command -v munge >/dev/null
}

install_slurm() {
  have_slurm && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed, and installing them needs root"
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and there is no apt-get"
  say "installing slurm-wlm and munge (apt-get, about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  # An old or empty package list finds nothing: update first.
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get install -y -qq slurm-wlm munge >&2 \
    || die "apt-get install slurm-wlm munge failed"
  have_slurm || die "slurm-wlm and munge were installed but slurmctld/slurmd/munged are not on PATH"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  local dir=$1
  if munge_works; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  mkdir -p /var/log/munge /var/lib/munge
  chown munge:munge /var/log/munge /var/lib/munge
  su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start"
  for _ in $(seq 50); do munge_works && break; sleep 0.1; done
  munge_works || die "munged started but munge -n | unmunge fails"
  # Ours to stop: `stop` ends it by this pid.
  cp /run/munge/munged.pid "$dir/munged.pid" 2>/dev/null || true
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { SLURM_CONF="$1/slurm.conf" sinfo -h -N -o '%t' 2>/dev/null | head -n1; }

logs() {
  local f
  for f in "$1"/log/*.log; do
    [ -f "$f" ] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; } >&2
  done
  return 0
}

start() {
  local dir=$1 cpus=${2:-4} host
  install_slurm
  [ "$(id -u)" = 0 ] || die "the daemons run as root (SlurmUser=root): run as root"
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  dir=$(cd "$dir" && pwd)
  host=$(hostname -s)
  sed -e "s|@DIR@|$dir|g" -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" \
    "$here/slurm.conf.template" > "$dir/slurm.conf"
  start_munge "$dir"
  alive "$dir/slurmctld.pid" || slurmctld -f "$dir/slurm.conf" || { logs "$dir"; die "slurmctld did not start"; }
  alive "$dir/slurmd.pid" || slurmd -f "$dir/slurm.conf" || { logs "$dir"; die "slurmd did not start"; }
  local state=""
  for _ in $(seq 120); do
    state=$(node_state "$dir")
    case $state in
      idle|mix|alloc) break ;;
      down*|drain*) SLURM_CONF="$dir/slurm.conf" scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  case $state in
    idle|mix|alloc) ;;
    *) logs "$dir"; die "node $host is not idle after 60 s (sinfo: ${state:-no answer})" ;;
  esac
  # Our daemons, not those of another cluster on the same ports.
  if ! alive "$dir/slurmctld.pid" || ! alive "$dir/slurmd.pid"; then
    logs "$dir"; die "slurmctld or slurmd of $dir exited (another cluster on ports 16817/16818?)"
  fi
  say "node $host up ($cpus CPUs); daemons' logs in $dir/log"
  echo "export SLURM_CONF=$dir/slurm.conf"
}

stop_pid() {
  local f=$1 pid
  alive "$f" || return 0
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  local dir=$1 jobs
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/slurm.conf" ] && alive "$dir/slurmctld.pid"; then
    export SLURM_CONF=$dir/slurm.conf
    # Cancel what still runs, so that no batch script outlives the daemons (slurmstepd would).
    jobs=$(squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 60); do
        [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break
        sleep 0.5
      done
    fi
  fi
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
  rm -f "$dir/munged.pid"
  say "stopped the cluster of $dir"
}

case ${1:-} in
  start) [ $# -ge 2 ] || usage; start "$2" "${3:-4}" ;;
  stop) [ $# -ge 2 ] || usage; stop "$2" ;;
  install) install_slurm ;;
  *) usage ;;
esac
