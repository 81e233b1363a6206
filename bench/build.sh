#!/usr/bin/env bash
# Benchmark (run by hand, not part of the tests): `kiln build` against buildah and docker+BuildKit,
# in the same run, on the cases of bench/cases/ and the scenarios cold, warm (no-op rebuild),
# touched (one context file changed), push (to a local registry), plus RUN-step overhead.
# Prints a table of median wall times, kiln/peer ratios and the targets of issues 4 and 5.
#
# Usage: bash bench/build.sh [-n RUNS] [-c CASE,CASE...] [-t TOOL,TOOL...]
#   -n  runs of every measurement (median reported; default 1, ~15 min on 2 cores)
#   -c  cases (default: all directories of bench/cases/)
#   -t  tools (default: kiln,buildah,docker; a peer that cannot start is left out, with the reason)
# Env: KILN=/path/to/kiln skips the release build; KILN_BENCH_CACHE (default
# /var/tmp/kiln-bench-cache) keeps the debootstrapped Debian base and downloaded .debs between runs;
# KILN_BENCH_PORT (default 5071) is the loopback registry's port. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo=$PWD
runs=1
cases=$(cd bench/cases && ls -d -- */ | tr -d / | tr '\n' ,)
tools=kiln,buildah,docker
while getopts n:c:t:h opt; do
  case $opt in
  n) runs=$OPTARG ;;
  c) cases=$OPTARG ;;
  t) tools=$OPTARG ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "build.sh: needs root (namespaces, mounts, dockerd)" >&2; exit 1; }
IFS=, read -r -a cases <<<"$cases"
IFS=, read -r -a tools <<<"$tools"

bash scripts/deps.sh
# Bench-only packages: debootstrap makes the Debian base of the deps case.
dpkg-query -W -f='${Status}' debootstrap 2>/dev/null | grep -q "ok installed" ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
KILN_GIVEN=${KILN:-}
if [ -z "${KILN:-}" ]; then
  cargo build --release --locked -p kiln-builder
  KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
fi
cache=${KILN_BENCH_CACHE:-/var/tmp/kiln-bench-cache}
port=${KILN_BENCH_PORT:-5071}
mkdir -p "$cache"
work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
ddir=/tmp/kbench-d.$$ # dockerd's dir: short, it holds unix sockets
registry_pid=
results=$work/results.tsv
mkdir -p "$work/logs" "$work/bases" "$work/ctx"

stop_registry() {
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    registry_pid=
  fi
}
cleanup() {
  stop_registry
  # Every command's output stays for reading after the run.
  clean_run last-logs
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(uname -r); load before: $(uptime)" | tee "$work/machine"

# ---- base images (none can be pulled here) --------------------------------------------------
declare -A base_ref=([busybox]=kilnbench/busybox:1 [debian]=kilnbench/debian:bookworm)
needed_bases=()
for c in "${cases[@]}"; do
  [ -f "bench/cases/$c/case.conf" ] || { echo "build.sh: no case bench/cases/$c" >&2; exit 1; }
  # shellcheck disable=SC1090
  needed_bases+=($(bases=; . "bench/cases/$c/case.conf"; echo "$bases"))
done
# shellcheck disable=SC2207
needed_bases=($(printf '%s\n' "${needed_bases[@]}" | sort -u))

# The Debian base: debootstrap minbase from Debian's mirror, cleaned like the official image (no
# apt lists, no .debs), as a deterministic tarball; kept in the cache.
debian_rootfs() {
  local out=$cache/debian-bookworm.tar root=$work/debian-rootfs
  [ -f "$out" ] && return 0
  echo "making the Debian base with debootstrap (once; cached in $out)..." >&2
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/logs/debootstrap" 2>&1 || {
    tail -n 20 "$work/logs/debootstrap" >&2
    echo "build.sh: debootstrap from deb.debian.org failed (see above): the deps case needs it" >&2
    return 1
  }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar --sort=name --numeric-owner --mtime='2024-01-01 00:00:00Z' --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$root" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$root"
}
# Every tool loads the same docker-archive of each base, saved by kiln from an import.
export KILN_ROOT=$work/template
for b in "${needed_bases[@]}"; do
  case $b in
  busybox) bash testdata/busybox/mkrootfs.sh "$work/busybox-rootfs.tar" && src=$work/busybox-rootfs.tar ;;
  debian) debian_rootfs && src=$cache/debian-bookworm.tar ;;
  *) echo "build.sh: unknown base $b" >&2; exit 1 ;;
  esac
  "$KILN" import "$src" "${base_ref[$b]}" >/dev/null
  "$KILN" save -o "$work/bases/$b.tar" "${base_ref[$b]}"
done
rm -rf "$work/template" "$work/busybox-rootfs.tar"

# ---- the tools: reset (fresh store + bases loaded and unpacked, untimed), build, push ------------
export KILN_ROOT=$work/kiln/store
kiln_reset() {
  umount_under "$work/kiln"
  rm -rf "$work/kiln"
  for b in "$@"; do
    "$KILN" load -i "$work/bases/$b.tar" >/dev/null &&
      "$KILN" run --rm --network none "${base_ref[$b]}" true || return 1 # unpack it, as docker load does
  done
}
kiln_build() { "$KILN" build --progress plain --network none -f "$1" -t "$3" "$2"; }
kiln_push() { "$KILN" push "$1" "$2"; }

B=(buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)
buildah_reset() {
  "${B[@]}" rm -a >/dev/null 2>&1 || true
  umount_under "$work/buildah"
  rm -rf "$work/buildah"
  for b in "$@"; do "${B[@]}" pull -q "docker-archive:$work/bases/$b.tar" >/dev/null || return 1; done
}
# --jobs: buildah runs one stage at a time unless told; --layers: its step cache (off by default).
buildah_build() {
  "${B[@]}" bud --layers --pull=never --isolation oci --runtime runc --network none --jobs "$(nproc)" \
    --format docker -f "$1" -t "$3" "$2"
}
buildah_push() { "${B[@]}" push --tls-verify=false "$1" "docker://$2"; }

docker_reset() {
  restart_dockerd "$ddir" || return 1
  for b in "$@"; do "$D" load -q -i "$work/bases/$b.tar" >/dev/null || return 1; done
}
docker_build() { DOCKER_BUILDKIT=1 "$D" build --progress plain --network none -f "$1" -t "$3" "$2"; }
# 127.0.0.0/8 is an insecure (plain HTTP) registry for dockerd by default.
docker_push() { "$D" tag "$1" "$2" && "$D" push "$2"; }

probe_tools "${tools[@]}"
{
  echo "== kiln: $KILN (repo HEAD $(git -C "$repo" rev-parse --short HEAD)${KILN_GIVEN:+; given by KILN, may be older})"
  buildah --version
  "$D" version --format 'docker {{.Client.Version}} / dockerd {{.Server.Version}} (BuildKit)' 2>/dev/null || true
} | tee -a "$work/machine"

# ---- measurements -----------------------------------------------------------------------------
# timed LOG CMD...: runs CMD with its output in LOG; prints the wall seconds; fails as CMD does.
timed() {
  local log=$1 t0 t1
  shift
  t0=$(date +%s%N)
  "$@" >"$log" 2>&1 || return 1
  t1=$(date +%s%N)
  awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.3f", ns / 1e9 }'
}
# measure CASE SCENARIO TOOL RUN CMD...: one timed measurement into the results (FAIL on error).
measure() {
  local case=$1 scenario=$2 tool=$3 run=$4 log secs
  shift 4
  log=$work/logs/$case.$scenario.$tool.$run
  if secs=$(timed "$log" "$@"); then
    printf '%s\t%s\t%s\t%s\n' "$case" "$scenario" "$tool" "$secs" >>"$results"
    printf '  %-20s %-15s %-8s %8ss\n' "$case" "$scenario" "$tool" "$secs" >&2
    echo "$secs"
  else
    printf '%s\t%s\t%s\tFAIL\n' "$case" "$scenario" "$tool" >>"$results"
    echo "  $case $scenario $tool FAILED; the end of its log ($log):" >&2
    tail -n 15 "$log" | sed 's/^/    | /' >&2
    return 1
  fi
}
# kiln says how many steps ran; a no-op rebuild that runs any is a cache bug worth flagging.
check_kiln_cached() {
  local log=$work/logs/$1.$2.kiln.$3
  if ! grep -q '(0 steps run' "$log"; then
    echo "  NOTE: kiln's $2 rebuild of $1 ran steps: $(grep '^built ' "$log")" | tee -a "$work/notes" >&2
  fi
}

# reset TOOL BASE...: a fresh store with the bases, or a message and failure.
reset() {
  local tool=$1
  shift
  "${tool}_reset" "$@" >"$work/logs/reset.$tool" 2>&1 && return 0
  echo "  resetting $tool's store failed; the end of its log:" >&2
  tail -n 15 "$work/logs/reset.$tool" | sed 's/^/    | /' >&2
  return 1
}

# run_case CASE TOOL RUN: every scenario of CASE with TOOL, from a fresh store.
run_case() {
  local case=$1 tool=$2 run=$3 ctx=$work/ctx/$1 tag=bench/$1:latest bases touches push baseline
  bases= touches= push= baseline=
  # shellcheck disable=SC1090
  . "bench/cases/$case/case.conf"
  # shellcheck disable=SC2086
  if [ -n "$baseline" ]; then
    reset "$tool" $bases || return 0
    local t0 t1 steps
    t0=$(measure "$case" cold-0 "$tool" "$run" "${tool}_build" "$ctx/$baseline" "$ctx" "$tag-0") || return 0
    reset "$tool" $bases || return 0
    t1=$(measure "$case" cold "$tool" "$run" "${tool}_build" "$ctx/Dockerfile" "$ctx" "$tag") || return 0
    steps=$(($(grep -c '^RUN' "$ctx/Dockerfile") - $(grep -c '^RUN' "$ctx/$baseline" || true)))
    printf '%s\tper-step-ms\t%s\t%s\n' "$case" "$tool" "$(awk -v a="$t0" -v b="$t1" -v n="$steps" \
      'BEGIN { printf "%.1f", (b - a) * 1000 / n }')" >>"$results"
  else
    # shellcheck disable=SC2086
    reset "$tool" $bases || return 0
    measure "$case" cold "$tool" "$run" "${tool}_build" "$ctx/Dockerfile" "$ctx" "$tag" >/dev/null || return 0
  fi
  measure "$case" warm "$tool" "$run" "${tool}_build" "$ctx/Dockerfile" "$ctx" "$tag" >/dev/null &&
    if [ "$tool" = kiln ]; then check_kiln_cached "$case" warm "$run"; fi
  if [ -n "$push" ]; then
    # A fresh registry for every push: nothing of an earlier push can be mounted or skipped.
    rm -rf "$work/registry"
    registry_pid=$(bash scripts/registry.sh "$port" "$work/registry")
    measure "$case" push "$tool" "$run" "${tool}_push" "$tag" "127.0.0.1:$port/bench/$case:$tool-$run" >/dev/null || true
    stop_registry
  fi
  local t label path
  for t in $touches; do
    label=${t%%:*} path=$ctx/${t#*:}
    cp -p "$path" "$work/orig"
    echo "# touched in run $run" >>"$path"
    measure "$case" "$label" "$tool" "$run" "${tool}_build" "$ctx/Dockerfile" "$ctx" "$tag" >/dev/null || true
    cp "$work/orig" "$path"
    # Back to the original tree (a cache hit for every tool), so the next touch starts from it.
    "${tool}_build" "$ctx/Dockerfile" "$ctx" "$tag" >"$work/logs/$case.settle.$tool.$run" 2>&1 || true
  done
}

for c in "${cases[@]}"; do
  ctx=$work/ctx/$c
  mkdir -p "$ctx"
  (cd "bench/cases/$c" && tar --exclude=case.conf --exclude='gen.*' -cf - .) | tar -C "$ctx" -xf -
  for gen in "bench/cases/$c"/gen.*; do
    [ -e "$gen" ] || continue
    echo "generating the context of $c..." >&2
    case $gen in
    *.py) python3 "$gen" "$ctx" "$cache" ;;
    *.sh) bash "$gen" "$ctx" "$cache" ;;
    esac
  done
  for run in $(seq "$runs"); do
    for tool in "${available[@]}"; do
      run_case "$c" "$tool" "$run"
    done
  done
  rm -rf "$ctx"
done
echo "== load after: $(uptime)" | tee -a "$work/machine"

# ---- the table --------------------------------------------------------------------------------
python3 - "$results" "$runs" "${available[@]}" <<'PY'
import statistics
import sys

path, runs, tools = sys.argv[1], sys.argv[2], sys.argv[3:]
rows, values = [], {}
for line in open(path):
    case, scenario, tool, value = line.rstrip("\n").split("\t")
    if (case, scenario) not in rows:
        rows.append((case, scenario))
    values.setdefault((case, scenario, tool), []).append(value)

# Targets (issues 4 and 5): kiln's time over BuildKit's, or an absolute bound in ms.
def target(case, scenario):
    if scenario == "warm":
        return ("ratio", 0.1)
    return {
        ("multistage-parallel", "cold"): ("ratio", 0.7),
        ("bigcontext", "touched"): ("ratio", 0.3),
        ("bigfile", "push"): ("ratio", 0.5),
        ("runtrue", "per-step-ms"): ("abs", 25.0),
    }.get((case, scenario))

def median(case, scenario, tool):
    vals = values.get((case, scenario, tool))
    if not vals:
        return None
    if "FAIL" in vals:
        return "FAIL"
    return statistics.median(float(v) for v in vals)

def cell(v):
    return "-" if v is None else v if isinstance(v, str) else f"{v:.3f}"

peers = [t for t in tools if t != "kiln"]
head = f"{'case':<20} {'scenario':<15}" + "".join(f"{t:>10}" for t in tools)
head += "".join(f"{'kiln/' + p:>14}" for p in peers) + "   target"
print(f"\nmedian wall seconds of {runs} run(s) (per-step-ms: milliseconds per RUN step)")
print(head)
print("-" * len(head))
for case, scenario in rows:
    m = {t: median(case, scenario, t) for t in tools}
    line = f"{case:<20} {scenario:<15}"
    line += "".join(f"{cell(m[t]):>10}" for t in tools)
    ratios = {}
    for p in peers:
        k, v = m.get("kiln"), m.get(p)
        ok = isinstance(k, float) and isinstance(v, float) and v > 0
        ratios[p] = k / v if ok else None
        line += f"{'-' if ratios[p] is None else f'{ratios[p]:.2f}x':>14}"
    t = target(case, scenario)
    if t:
        kind, bound = t
        if kind == "abs":
            k = m.get("kiln")
            verdict = "-" if not isinstance(k, float) else ("ok" if k <= bound else "MISSED")
            line += f"   <= {bound:g} ms: {verdict}"
        else:
            r = ratios.get("docker")
            verdict = "- (no docker)" if r is None else ("ok" if r <= bound else "MISSED")
            line += f"   <= {bound:g}x docker: {verdict}"
    print(line)
PY
cat "$work/notes" 2>/dev/null || true
cp "$results" "$cache/last-results.tsv"
echo "(raw results: $cache/last-results.tsv; every command's output: $cache/last-logs/)"
