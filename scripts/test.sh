#!/usr/bin/env bash
# Runs kiln's whole test suite: installs what it needs when missing, then the tests.
# Needs root (namespaces, overlay mounts, device nodes): tests fail loudly without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ "$(id -u)" != 0 ]; then echo "test.sh: kiln's tests need root" >&2; exit 1; fi
exec cargo test --workspace --locked "$@"
