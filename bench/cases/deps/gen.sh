#!/usr/bin/env bash
# deps' context: debs/ (python3.11-minimal and what it needs beyond a minbase Debian, fetched once
# with apt-get download into CACHE_DIR/debs) and src/ (200 small Python modules).
# Usage: gen.sh CONTEXT_DIR CACHE_DIR
set -euo pipefail
ctx=$1 cache=$2
if [ ! -f "$cache/debs/.done" ]; then
  rm -rf "$cache/debs" && mkdir -p "$cache/debs"
  (cd "$cache/debs" && apt-get download -o APT::Sandbox::User=root python3.11-minimal libpython3.11-minimal libexpat1 libssl3 >/dev/null) || {
    echo "deps/gen.sh: apt-get download from Debian's mirror failed" >&2; exit 1; }
  touch "$cache/debs/.done"
fi
mkdir -p "$ctx/debs" "$ctx/src/app"
cp "$cache"/debs/*.deb "$ctx/debs/"
for i in $(seq 0 199); do
  m=$(printf 'mod_%03d' "$i")
  {
    echo "\"\"\"Module $m.\"\"\""
    for j in $(seq 0 19); do
      printf 'def f_%d(x):\n    return x * %d + %d\n\n' "$j" "$j" "$i"
    done
  } >"$ctx/src/app/$m.py"
done
