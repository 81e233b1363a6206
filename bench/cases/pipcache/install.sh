#!/bin/sh
# A pip stand-in for the pipcache benchmark, in busybox sh. For each `name==version` line of the
# requirements file: the wheel comes from the cache mount if it is there and its sha256 checks;
# otherwise it is "downloaded" (copied from the index and its sha256 checked) and "built" (the sdist
# unpacked and repacked with gzip -9, the CPU work a cache mount saves, like pip building a wheel
# from an sdist) into the cache. Then the wheel's sha256 is checked and it is unpacked into
# site-packages. Prints one summary line the benchmark greps: "pip-install: H from cache, M built".
set -eu
reqs=${1:?usage: pip-install REQUIREMENTS}
index=/index
cache=/root/.cache/pip/wheels
site=/usr/lib/site-packages
mkdir -p "$cache" "$site"
hits=0 built=0
while read -r line; do
  req=$(echo "${line%%#*}" | tr -d ' \t\r')
  [ -n "$req" ] || continue
  name=${req%%==*} version=${req#*==}
  [ "$name" != "$req" ] || { echo "pip-install: $reqs: '$line' is not name==version" >&2; exit 1; }
  wheel=$name-$version.whl
  if [ -f "$cache/$wheel.sha256" ] && (cd "$cache" && sha256sum -c -s "$wheel.sha256"); then
    hits=$((hits + 1))
  else
    sdist=$name-$version.tar.gz
    [ -f "$index/$sdist" ] || { echo "pip-install: $req: no $sdist in the index" >&2; exit 1; }
    tmp=$(mktemp -d)
    cp "$index/$sdist" "$index/$sdist.sha256" "$tmp/"
    (cd "$tmp" && sha256sum -c -s "$sdist.sha256") || { echo "pip-install: $sdist: sha256 mismatch" >&2; exit 1; }
    mkdir "$tmp/src"
    tar -xzf "$tmp/$sdist" -C "$tmp/src"
    (cd "$tmp/src" && tar -cf - "$name") | gzip -9 >"$cache/$wheel.part"
    mv "$cache/$wheel.part" "$cache/$wheel"
    (cd "$cache" && sha256sum "$wheel" >"$wheel.sha256")
    rm -rf "$tmp"
    built=$((built + 1))
  fi
  (cd "$cache" && sha256sum -c -s "$wheel.sha256") || { echo "pip-install: $wheel: sha256 mismatch" >&2; exit 1; }
  tar -xzf "$cache/$wheel" -C "$site"
done <"$reqs"
echo "pip-install: $hits from cache, $built built"
