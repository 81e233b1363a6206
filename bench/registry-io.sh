#!/usr/bin/env bash
# Benchmark (run by hand, not part of the tests): push and pull one image with a 1 GiB
# random-content layer to a local registry, with kiln and with skopeo in the same run.
# Prints wall times, kiln/skopeo ratios and each tool's peak RSS.
# Usage: bash bench/registry-io.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
bash scripts/deps.sh
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
cargo build --release --locked -p kiln-builder
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln

work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
port=5056
registry_pid=$(bash scripts/registry.sh "$port" "$work/registry")

echo "making a ${size_mib} MiB random layer..." >&2
mkdir -p "$work/rootfs"
head -c "$((size_mib << 20))" /dev/urandom >"$work/rootfs/random.bin"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
rm -rf "$work/rootfs"
"$kiln" import --compression gzip "$work/rootfs.tar" bench:big >/dev/null
rm -f "$work/rootfs.tar"
"$kiln" save --format oci -o "$work/layout.tar" bench:big
mkdir "$work/layout" && tar -C "$work/layout" -xf "$work/layout.tar" && rm "$work/layout.tar"

# measure NAME CMD...: runs CMD under /usr/bin/time, records seconds and peak RSS (KiB).
declare -A secs rss
measure() {
  local name=$1; shift
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f '%e %M' -o "$work/time.$name" "$@" >/dev/null 2>"$work/err.$name" || {
    cat "$work/err.$name" >&2; exit 1; }
  read -r secs[$name] rss[$name] <"$work/time.$name"
}

measure kiln_push "$kiln" push bench:big "127.0.0.1:$port/bench/kiln:1"
measure skopeo_push skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:big" \
  "docker://127.0.0.1:$port/bench/skopeo:1"
"$kiln" rmi bench:big >/dev/null
"$kiln" prune >/dev/null
measure kiln_pull "$kiln" pull "127.0.0.1:$port/bench/skopeo:1"
measure skopeo_pull skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/bench/kiln:1" \
  "oci:$work/pulled:x"

printf '\n%-6s %10s %10s %8s %14s %14s\n' op kiln_s skopeo_s ratio kiln_rss_MiB skopeo_rss_MiB
for op in push pull; do
  k=${secs[kiln_$op]} s=${secs[skopeo_$op]}
  printf '%-6s %10s %10s %8s %14d %14d\n' "$op" "$k" "$s" "$(awk "BEGIN{printf \"%.2f\", $k / $s}")" \
    "$((rss[kiln_$op] / 1024))" "$((rss[skopeo_$op] / 1024))"
done
