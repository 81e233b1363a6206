#!/usr/bin/env bash
# kiln's main job, end to end on this machine: build the multi-stage image of
# testdata/build/demo on a busybox base, run it, push it to a real registry on a loopback port,
# then drop it locally, pull it back and run it again. Rebuilding shows every step cached.
# Installs what it needs when missing. Needs root. Store: $KILN_ROOT (default /var/lib/kiln).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p kiln-builder
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
work=$(mktemp -d)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=${KILN_DEMO_PORT:-5055}
registry_pid=$(bash scripts/registry.sh "$port" "$work/registry")
image=127.0.0.1:$port/demo/app:1.0

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
# No image can be pulled from Docker Hub here: the base image is made from busybox-static.
bash testdata/busybox/mkrootfs.sh "$work/busybox.tar"
step "$kiln" import "$work/busybox.tar" busybox:latest
step "$kiln" build --progress plain -t "$image" --push testdata/build/demo
step "$kiln" run --rm "$image"
step "$kiln" build --progress plain -t "$image" testdata/build/demo
step "$kiln" rmi "$image"
step "$kiln" pull "$image"
step "$kiln" images
step "$kiln" inspect "$image"
step "$kiln" run --rm "$image" kiln
