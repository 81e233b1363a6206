#!/usr/bin/env bash
# Installs what kiln's tests and demo need on a fresh Debian machine (as root), when missing.
# One list for the tests, the demo and CI.
set -euo pipefail
packages=(
  docker-registry   # the real registry the tests and demo push to and pull from
  busybox-static    # the base image's rootfs (no image can be pulled here)
  skopeo            # interop: reads what kiln pushes and saves, pushes what kiln pulls
  apache2-utils     # htpasswd, for the basic-auth registry fixture
  openssl           # the throwaway CA of the TLS registry fixture
  libseccomp-dev    # the RUN sandbox's seccomp filter
  docker.io         # dockerd 20.10 + BuildKit, the reference of the differential tests (scripts/dockerd.sh)
  buildah           # the differential tests' second opinion
  podman            # interop: pulls and runs what kiln pushes
  openssh-client    # RUN --mount=type=ssh tests: a real ssh-agent, ssh-add inside the step
  git               # ADD from git repositories (kiln runs the git CLI)
  bzip2 xz-utils zstd  # ADD tests make archives of every compression kiln unpacks
  ca-certificates
  curl
  git               # ADD from a git URL: kiln runs the git CLI; the git tests build repositories with it
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's registry package starts a system registry on :5000; kiln's tests start their own.
if systemctl is-active --quiet docker-registry 2>/dev/null; then systemctl stop docker-registry || true; fi
