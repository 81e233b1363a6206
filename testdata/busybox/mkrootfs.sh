#!/usr/bin/env bash
# Makes a busybox root filesystem tarball, the base image of kiln's tests and demo (no image can
# be pulled here). Usage: mkrootfs.sh OUT.tar
# The tar is deterministic (sorted, fixed owner and mtime), so the imported image's digest is too.
set -euo pipefail
out=${1:?usage: mkrootfs.sh OUT.tar}
busybox=/bin/busybox
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || [ ! -x "$busybox" ]; then
  echo "mkrootfs.sh: $busybox is missing or not static: install the Debian package busybox-static" >&2
  exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home/app,tmp,var/tmp,proc,sys,dev,run}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
cp "$here/passwd" "$here/group" "$root/etc/"
chown -R 0:0 "$root"
chown 1000:1000 "$root/home/app"
tar --sort=name --numeric-owner --mtime='2024-01-01 00:00:00Z' \
  --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$root" -cf "$out" .
