#!/usr/bin/env bash
# Benchmark (run by hand, not part of the tests): the per-step overhead of running `true` in a
# sandbox, N times (default 50) each, with kiln (embedded runtime, and --runtime runc), bare
# `runc run`, and `buildah run`, in the same run on the same busybox rootfs.
# Prints ms per step and the ratios to kiln's embedded runtime.
# Usage: bash bench/run-overhead.sh [N]      KILN=/path/to/kiln to skip the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
[ "$(id -u)" = 0 ] || { echo "run-overhead.sh: needs root (namespaces, cgroups, mounts)" >&2; exit 1; }
command -v runc >/dev/null || apt-get install -y -qq runc >/dev/null
command -v buildah >/dev/null || apt-get install -y -qq buildah >/dev/null
if [ -z "${KILN:-}" ]; then
  cargo build --release --locked -p kiln-builder
  KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
fi
# A fresh build leaves ~100 MB to write back: flushed now, it does not stall the first timed loop.
sync

work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
ctr=
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
bash testdata/busybox/mkrootfs.sh "$work/busybox.tar"
"$KILN" import "$work/busybox.tar" bench:busybox >/dev/null

# ms per iteration of "$@" run $n times.
per_step() {
  local start end
  start=$(date +%s%N)
  for i in $(seq "$n"); do "$@" "$i" >/dev/null; done
  end=$(date +%s%N)
  echo $(((end - start) / n / 1000))  # microseconds
}

kiln_embedded() { "$KILN" run --rm bench:busybox true; }
kiln_runc() { "$KILN" run --rm --runtime runc bench:busybox true; }

mkdir -p "$work/bundle/rootfs"
tar -xf "$work/busybox.tar" -C "$work/bundle/rootfs"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"true"/' config.json)
runc_run() { runc --root "$work/runc-state" run --bundle "$work/bundle" "bench-$1"; }

ctr=$(buildah from --name "kiln-bench-$$" scratch)
mnt=$(buildah mount "$ctr")
tar -xf "$work/busybox.tar" -C "$mnt"
buildah umount "$ctr" >/dev/null
buildah_run() { buildah run --network host "$ctr" true; }

# One untimed warm-up each (page cache, first cgroup creation).
kiln_embedded 0 >/dev/null; kiln_runc 0 >/dev/null; runc_run warm >/dev/null; buildah_run 0 >/dev/null

k=$(per_step kiln_embedded)
kr=$(per_step kiln_runc)
r=$(per_step runc_run)
b=$(per_step buildah_run)
ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "per step over $n runs of 'true' (kiln includes opening the store and mounting an overlay snapshot):"
printf '  %-28s %8s ms\n' "kiln run (embedded)" "$(ms "$k")"
printf '  %-28s %8s ms  (%sx kiln)\n' "kiln run --runtime runc" "$(ms "$kr")" "$(ratio "$kr" "$k")"
printf '  %-28s %8s ms  (%sx kiln)\n' "runc run (bare bundle)" "$(ms "$r")" "$(ratio "$r" "$k")"
printf '  %-28s %8s ms  (%sx kiln)\n' "buildah run" "$(ms "$b")" "$(ratio "$b" "$k")"
