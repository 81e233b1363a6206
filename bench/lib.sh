# Shared by the bench scripts that compare kiln with buildah and docker+BuildKit: the private
# dockerd, which peers could start, and the clean-up of a run. Its functions read the caller's
# `work` (the run's directory, with `logs/` and `machine`), `ddir` (the dockerd directory),
# `cache` (kept between runs) and `B` (the buildah command with its private storage).

D=/usr/bin/docker # Debian's 20.10 CLI: another docker on PATH may lack BuildKit

# Restarts the private dockerd in directory $1 (wiped first) and points DOCKER_HOST at it.
restart_dockerd() {
  local env
  bash scripts/dockerd.sh stop "$1" >/dev/null
  rm -rf "$1"
  env=$(bash scripts/dockerd.sh start "$1") || return 1
  eval "$env"
  export DOCKER_HOST
}

# Sets `available` to the tools of "$@" (kiln, buildah, docker) that can run here; a peer that
# cannot start is left out, saying why. docker is tried with the caller's `docker_reset`.
probe_tools() {
  available=()
  local t
  for t in "$@"; do
    case $t in
    kiln) available+=(kiln) ;;
    buildah)
      if "${B[@]}" info >"$work/logs/buildah-info" 2>&1 && command -v runc >/dev/null; then
        available+=(buildah)
      else
        echo "== buildah left out: $(tail -n 3 "$work/logs/buildah-info")" | tee -a "$work/machine"
      fi
      ;;
    docker)
      if docker_reset >"$work/logs/docker-start" 2>&1; then
        available+=(docker)
      else
        echo "== docker left out: $(tail -n 3 "$work/logs/docker-start")" | tee -a "$work/machine"
      fi
      ;;
    *) echo "unknown tool $t (kiln, buildah, docker)" >&2; exit 2 ;;
    esac
  done
}

# Unmounts whatever is mounted under DIR (overlays a killed build or daemon left), deepest first.
umount_under() {
  awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

# Stops the private dockerd, unmounts and removes the run's directories, and keeps the run's
# logs as `$cache/$1` for reading afterwards.
clean_run() {
  bash scripts/dockerd.sh stop "$ddir" >/dev/null 2>&1 || true
  umount_under "$work"
  umount_under "$ddir"
  rm -rf "${cache:?}/$1" && mv "$work/logs" "$cache/$1" 2>/dev/null || true
  rm -rf "$work" "$ddir"
}
