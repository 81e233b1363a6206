#!/usr/bin/env bash
# Benchmark (run by hand, not part of the tests; issue 6): a pip-style `RUN --mount=type=cache`
# build, kiln against buildah and docker+BuildKit in the same run. Case bench/cases/pipcache/:
# `COPY requirements.txt`, then an installer that takes wheels from the cache mount or "downloads"
# and builds them from a local index (bind-mounted from the context). Scenarios, each from a fresh
# store holding only the busybox base (loaded and unpacked untimed):
#   cold     K requirements, empty cache mount: every wheel is built
#   add-one  then one requirement added and rebuilt: K wheels must come from the cache mount, 1 built
# Each build's output is checked for the installer's "pip-install: H from cache, M built" line; a
# tool whose cache mount was not reused (or was not empty when cold) is flagged in the table.
#
# Usage: bash bench/cache-mount.sh [-n RUNS] [-t TOOL,TOOL...]
#   -n  runs (median reported; default 3)
#   -t  tools (default: kiln,buildah,docker; a peer that cannot start is left out, with the reason)
# Env: KILN=/path/to/kiln skips the release build; KILN_BENCH_CACHE (default /var/tmp/kiln-bench-cache)
# keeps the generated package index between runs; PIPCACHE_PACKAGES (K, default 8) and
# PIPCACHE_PKG_MB (unpacked MiB per package, default 4) size it. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo=$PWD
runs=3
tools=kiln,buildah,docker
while getopts n:t:h opt; do
  case $opt in
  n) runs=$OPTARG ;;
  t) tools=$OPTARG ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "cache-mount.sh: needs root (namespaces, mounts, dockerd)" >&2; exit 1; }
IFS=, read -r -a tools <<<"$tools"

bash scripts/deps.sh
KILN_GIVEN=${KILN:-}
if [ -z "${KILN:-}" ]; then
  cargo build --release --locked -p kiln-builder
  KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
fi
cache=${KILN_BENCH_CACHE:-/var/tmp/kiln-bench-cache}
mkdir -p "$cache"
work=$(mktemp -d /var/tmp/kiln-cachebench.XXXXXX)
ddir=/tmp/kcache-d.$$ # dockerd's dir: short, it holds unix sockets
results=$work/results.tsv
ctx=$work/ctx
mkdir -p "$work/logs" "$ctx"

cleanup() { clean_run last-cachemount-logs; }
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(uname -r); load before: $(uptime)" | tee "$work/machine"

# ---- the context and the base (every tool loads the same docker-archive, saved by kiln) ---------
(cd bench/cases/pipcache && tar --exclude=case.conf --exclude='gen.*' -cf - .) | tar -C "$ctx" -xf -
echo "generating the package index (kept in $cache)..." >&2
python3 bench/cases/pipcache/gen.py "$ctx" "$cache"
cp "$ctx/requirements.txt" "$work/requirements.cold"
mv "$ctx/requirements.next.txt" "$work/requirements.add-one"
k=$(grep -c . "$work/requirements.cold")
base=kilnbench/busybox:1
bash testdata/busybox/mkrootfs.sh "$work/busybox-rootfs.tar"
KILN_ROOT=$work/template "$KILN" import "$work/busybox-rootfs.tar" "$base" >/dev/null
KILN_ROOT=$work/template "$KILN" save -o "$work/busybox.tar" "$base"
rm -rf "$work/template" "$work/busybox-rootfs.tar"

# ---- the tools: reset (fresh store, cache mounts included, + the base), build ------------------
# Each tool keeps its cache mounts in its own store (kiln: KILN_ROOT; buildah: $TMPDIR/buildah-cache-*;
# docker: the daemon's data-root), so a reset empties them too.
export KILN_ROOT=$work/kiln/store
kiln_reset() {
  umount_under "$work/kiln"
  rm -rf "$work/kiln"
  "$KILN" load -i "$work/busybox.tar" >/dev/null && "$KILN" run --rm --network none "$base" true
}
kiln_build() { "$KILN" build --progress plain --network none -t bench/pipcache "$ctx"; }

B=(buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)
buildah_reset() {
  "${B[@]}" rm -a >/dev/null 2>&1 || true
  umount_under "$work/buildah"
  rm -rf "$work/buildah"
  mkdir -p "$work/buildah/tmp"
  "${B[@]}" pull -q "docker-archive:$work/busybox.tar" >/dev/null
}
# TMPDIR: buildah keeps cache mounts in $TMPDIR/buildah-cache-UID (default /var/tmp), outside --root.
buildah_build() {
  TMPDIR=$work/buildah/tmp "${B[@]}" bud --layers --pull=never --isolation oci --runtime runc --network none \
    --jobs "$(nproc)" --format docker -t bench/pipcache "$ctx"
}

docker_reset() {
  restart_dockerd "$ddir" || return 1
  "$D" load -q -i "$work/busybox.tar" >/dev/null
}
docker_build() { DOCKER_BUILDKIT=1 "$D" build --progress plain --network none -t bench/pipcache "$ctx"; }

probe_tools "${tools[@]}"
{
  echo "== kiln: $KILN (repo HEAD $(git -C "$repo" rev-parse --short HEAD)${KILN_GIVEN:+; given by KILN, may be older})"
  buildah --version
  if [[ " ${available[*]} " == *" docker "* ]]; then
    "$D" version --format 'docker {{.Client.Version}} / dockerd {{.Server.Version}} (BuildKit)'
  fi
  echo "== $k requirements of ~${PIPCACHE_PKG_MB:-4} MiB unpacked each, then one added"
} | tee -a "$work/machine"

# ---- measurements -----------------------------------------------------------------------------
# measure SCENARIO TOOL RUN WANT: one timed build into the results; WANT is the installer's expected
# "H from cache, M built" (a mismatch is recorded: the tool did not use its cache mount as it should).
measure() {
  local scenario=$1 tool=$2 run=$3 want=$4 log t0 t1 secs got
  log=$work/logs/$scenario.$tool.$run
  t0=$(date +%s%N)
  if ! "${tool}_build" >"$log" 2>&1; then
    printf '%s\t%s\tFAIL\t-\n' "$scenario" "$tool" >>"$results"
    echo "  $scenario $tool FAILED; the end of its log ($log):" >&2
    tail -n 15 "$log" | sed 's/^/    | /' >&2
    return 1
  fi
  t1=$(date +%s%N)
  secs=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.3f", ns / 1e9 }')
  got=$(grep -o 'pip-install: [0-9]* from cache, [0-9]* built' "$log" | tail -n 1 | sed 's/^pip-install: //')
  [ -n "$got" ] || got="no installer line"
  printf '%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$secs" "$got" >>"$results"
  printf '  %-8s %-8s run %s %8ss  %s\n' "$scenario" "$tool" "$run" "$secs" "$got" >&2
  if [ "$got" != "$want" ]; then
    echo "  NOTE: $tool's $scenario build (run $run) says \"$got\", expected \"$want\" ($log)" | tee -a "$work/notes" >&2
  fi
}

for run in $(seq "$runs"); do
  for tool in "${available[@]}"; do
    cp "$work/requirements.cold" "$ctx/requirements.txt"
    if ! "${tool}_reset" >"$work/logs/reset.$tool.$run" 2>&1; then
      echo "  resetting $tool's store failed; the end of its log:" >&2
      tail -n 15 "$work/logs/reset.$tool.$run" | sed 's/^/    | /' >&2
      continue
    fi
    measure cold "$tool" "$run" "0 from cache, $k built" || continue
    cp "$work/requirements.add-one" "$ctx/requirements.txt"
    measure add-one "$tool" "$run" "$k from cache, 1 built" || true
  done
done
echo "== load after: $(uptime)" | tee -a "$work/machine"

# ---- the table --------------------------------------------------------------------------------
python3 - "$results" "$runs" "${available[@]}" <<'PY'
import statistics
import sys

path, runs, tools = sys.argv[1], sys.argv[2], sys.argv[3:]
times, reuse = {}, {}
for line in open(path):
    scenario, tool, secs, got = line.rstrip("\n").split("\t")
    times.setdefault((scenario, tool), []).append(secs)
    reuse.setdefault((scenario, tool), set()).add(got)

def median(scenario, tool):
    vals = times.get((scenario, tool))
    if not vals:
        return None
    if "FAIL" in vals:
        return "FAIL"
    return statistics.median(float(v) for v in vals)

peers = [t for t in tools if t != "kiln"]
head = f"{'scenario':<10}" + "".join(f"{t:>10}" for t in tools) + "".join(f"{'kiln/' + p:>15}" for p in peers)
print(f"\nmedian wall seconds of {runs} run(s); installer's report per tool below")
print(head)
print("-" * len(head))
for scenario in ("cold", "add-one"):
    m = {t: median(scenario, t) for t in tools}
    line = f"{scenario:<10}"
    line += "".join(f"{'-' if m[t] is None else m[t] if isinstance(m[t], str) else f'{m[t]:.3f}':>10}" for t in tools)
    for p in peers:
        k, v = m.get("kiln"), m.get(p)
        ok = isinstance(k, float) and isinstance(v, float) and v > 0
        line += f"{f'{k / v:.2f}x' if ok else '-':>15}"
    print(line)
print()
for scenario in ("cold", "add-one"):
    for t in tools:
        print(f"  {scenario:<8} {t:<8} pip-install: {' | '.join(sorted(reuse.get((scenario, t), {'-'})))}")
PY
cat "$work/notes" 2>/dev/null || true
cp "$results" "$cache/last-cachemount-results.tsv"
echo "(raw results: $cache/last-cachemount-results.tsv; every build's output: $cache/last-cachemount-logs/)"
