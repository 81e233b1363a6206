#!/usr/bin/env bash
# Starts and stops a private dockerd (Debian's docker.io, 20.10 with BuildKit) for tests and benchmarks.
#
# Usage:
#   scripts/dockerd.sh start DIR [EXTRA_DOCKERD_ARGS...]
#       Starts dockerd with everything of its own under DIR (data-root, exec-root, pidfile, socket,
#       log), waits until it answers, and prints two lines for `eval`:
#         DOCKER_HOST=unix://DIR/docker.sock
#         DOCKERD_PID=1234
#       e.g. eval "$(scripts/dockerd.sh start /tmp/d)"; export DOCKER_HOST; /usr/bin/docker info
#       EXTRA_DOCKERD_ARGS go to dockerd as they are (e.g. --insecure-registry 127.0.0.1:5000).
#   scripts/dockerd.sh stop DIR     stops that dockerd (TERM, then KILL after 30 s); DIR is left for the caller
#   scripts/dockerd.sh pid DIR      prints its pid, fails when it is not running
#
# Use the package's own CLI, /usr/bin/docker: another docker CLI on PATH may lack buildx/BuildKit support.
# Builds and runs need `--network none` (or host): with --bridge=none the default bridge network does
# not exist, and `DOCKER_BUILDKIT=1 docker build` without it fails with "network bridge not found".
# DIR should be short (it holds unix sockets, at most 108 bytes a path): a fresh dir under /tmp is fine.
# Needs root and `scripts/deps.sh` (docker.io). Several such daemons can run at once: dockerd 20.10
# starts a containerd of its own under --exec-root/--data-root (it would use a system containerd at
# /run/containerd/containerd.sock instead, but none runs on these machines: no systemd starts one).
#
# Why these flags:
#   --iptables=false --bridge=none   no host network changes; builds and runs use --network none/host
#   --exec-opt native.cgroupdriver=cgroupfs
#                                    no systemd runs here to delegate cgroups to, and this machine has
#                                    cgroup v1 controllers (v2 mount holds none of them): cgroupfs works
#   --storage-driver overlay2        DIR is on ext4 with d_type; DOCKERD_STORAGE_DRIVER=vfs overrides it
#                                    where DIR's filesystem cannot hold overlay upperdirs
#   --config-file DIR/daemon.json    an empty config, so a system /etc/docker/daemon.json changes nothing
set -euo pipefail

usage() { sed -n '2,21p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2

running_pid() {
  local pid
  pid=$(cat "$dir/docker.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

case "$cmd" in
start)
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || {
    echo "dockerd.sh: /usr/sbin/dockerd or /usr/bin/docker missing: install Debian's docker.io (scripts/deps.sh)" >&2
    exit 1
  }
  if pid=$(running_pid); then echo "dockerd.sh: a dockerd (pid $pid) already runs for $dir" >&2; exit 1; fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  echo '{}' >"$dir/daemon.json"
  # One start at a time on this machine: dockerd 20.10 creates /etc/docker/key.json on its first
  # start, and two first starts at once can read each other's half-written key and fail.
  exec 9>/tmp/kiln-dockerd-start.lock
  flock 9
  sock="$dir/docker.sock"
  # setsid: the daemon outlives this script and the caller's terminal signals; all of its output goes
  # to the log so a caller reading our stdout is not held open by it.
  setsid /usr/sbin/dockerd \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" \
    --host "unix://$sock" \
    --config-file "$dir/daemon.json" \
    --iptables=false \
    --bridge=none \
    --exec-opt native.cgroupdriver=cgroupfs \
    --storage-driver "${DOCKERD_STORAGE_DRIVER:-overlay2}" \
    "$@" >"$dir/dockerd.log" 2>&1 </dev/null 9>&- &
  launched=$!
  for _ in $(seq 1 120); do
    if /usr/bin/docker -H "unix://$sock" version >/dev/null 2>&1; then
      echo "DOCKER_HOST=unix://$sock"
      echo "DOCKERD_PID=$(running_pid || echo "$launched")"
      exit 0
    fi
    if ! kill -0 "$launched" 2>/dev/null; then
      echo "dockerd.sh: dockerd exited while starting; last lines of $dir/dockerd.log:" >&2
      tail -n 20 "$dir/dockerd.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "dockerd.sh: dockerd did not answer on $sock within 60 s; last lines of $dir/dockerd.log:" >&2
  tail -n 20 "$dir/dockerd.log" >&2
  kill "$launched" 2>/dev/null || true
  exit 1
  ;;
stop)
  dir=$(cd "$dir" 2>/dev/null && pwd) || exit 0
  if pid=$(running_pid); then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd.sh: dockerd $pid did not stop within 30 s; killing it and its containerd" >&2
      kill -KILL "$pid" 2>/dev/null || true
      cpid=$(cat "$dir/exec/containerd/containerd.pid" 2>/dev/null || true)
      [ -n "$cpid" ] && kill -KILL "$cpid" 2>/dev/null || true
    fi
  fi
  # A daemon that was killed leaves its overlay and shm mounts: unmount them (deepest first) so the
  # caller can remove DIR.
  awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  ;;
pid)
  running_pid || { echo "dockerd.sh: no dockerd runs for $dir" >&2; exit 1; }
  ;;
*) usage ;;
esac
