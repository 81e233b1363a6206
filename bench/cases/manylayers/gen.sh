#!/usr/bin/env bash
# manylayers' context: f1.txt .. f25.txt, small text files. Usage: gen.sh CONTEXT_DIR CACHE_DIR
set -euo pipefail
ctx=$1
for i in $(seq 25); do
  for j in $(seq 100); do echo "file $i line $j"; done >"$ctx/f$i.txt"
done
