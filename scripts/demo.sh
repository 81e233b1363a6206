#!/usr/bin/env bash
# kiln's main job, end to end on this machine: make a busybox base image, push it to a real
# registry on a loopback port, drop it locally, pull it back, show it and run it.
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
remote=127.0.0.1:$port/demo/busybox:latest

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
bash testdata/busybox/mkrootfs.sh "$work/busybox.tar"
step "$kiln" import "$work/busybox.tar" busybox:demo
step "$kiln" push busybox:demo "$remote"
step "$kiln" rmi busybox:demo
step "$kiln" prune
step "$kiln" pull "$remote"
step "$kiln" images
step "$kiln" inspect "$remote"
step "$kiln" run --rm "$remote" sh -c 'echo "hello from $(hostname), pid $$"; id app'

