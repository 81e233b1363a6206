#!/usr/bin/env bash
# bigfile's context: big.bin, 1 GiB of an AES-CTR keystream with a fixed key: deterministic and
# incompressible like real binaries' worst case. Usage: gen.sh CONTEXT_DIR CACHE_DIR
set -euo pipefail
ctx=$1
head -c 1073741824 /dev/zero |
  openssl enc -aes-128-ctr -nosalt -K 6b696c6e2d62656e63682d6269676669 -iv 00000000000000000000000000000000 >"$ctx/big.bin"
