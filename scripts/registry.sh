#!/usr/bin/env bash
# Starts Debian's registry on 127.0.0.1:PORT with its storage in DIR, waits until it answers,
# and prints its pid. Used by the demo and the benchmarks. Usage: registry.sh PORT DIR
set -euo pipefail
port=${1:?usage: registry.sh PORT DIR} dir=${2:?usage: registry.sh PORT DIR}
mkdir -p "$dir"
cat >"$dir/config.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/data}}
http: {addr: 127.0.0.1:$port}
YML
/usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  if curl -fs "http://127.0.0.1:$port/v2/" >/dev/null; then echo "$pid"; exit 0; fi
  sleep 0.1
done
echo "registry.sh: the registry did not answer on 127.0.0.1:$port; its log:" >&2
cat "$dir/log" >&2
kill "$pid" 2>/dev/null || true
exit 1
