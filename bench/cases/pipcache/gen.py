#!/usr/bin/env python3
"""pipcache's context, the same bytes on every run (seeded generator).

index/: PACKAGES + 1 sdists `pkgNN-1.0.tar.gz` (each ~200 Python-like text files, ~PKG_MB MiB
unpacked, ~1/3 of that gzipped) with a `.sha256` file beside each; requirements.txt: the first
PACKAGES of them; requirements.next.txt: all of them (bench/cache-mount.sh's "one dependency
added"). The index is kept in CACHE_DIR/pipcache-<params>/ between runs.
Usage: gen.py CONTEXT_DIR CACHE_DIR   (env: PIPCACHE_PACKAGES, default 8; PIPCACHE_PKG_MB, default 4)
"""
import gzip
import hashlib
import io
import os
import random
import shutil
import sys
import tarfile

ctx, cache = sys.argv[1], sys.argv[2]
packages = int(os.environ.get("PIPCACHE_PACKAGES", "8"))
pkg_mb = int(os.environ.get("PIPCACHE_PKG_MB", "4"))
names = [f"pkg{i:02d}" for i in range(1, packages + 2)]
kept = os.path.join(cache, f"pipcache-{packages}x{pkg_mb}")


def sdist(name, rng, words):
    """One sdist's bytes: a deterministic tar.gz (fixed owner, mtime, order)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        left = pkg_mb << 20
        n = 0
        while left > 0:
            size = min(left, rng.randint(4 << 10, 40 << 10))
            text = []
            while sum(map(len, text)) < size:
                fn = rng.choice(words)
                text.append(f"def {fn}_{len(text)}(x, y):\n    return {rng.choice(words)}(x) + {rng.randint(0, 9999)} * y\n\n")
            data = "".join(text).encode()[:size]
            info = tarfile.TarInfo(f"{name}/mod_{n:03d}.py")
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 1704067200, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
            left -= size
            n += 1
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


if not os.path.exists(os.path.join(kept, ".done")):
    shutil.rmtree(kept, ignore_errors=True)
    os.makedirs(kept)
    rng = random.Random(20261122)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    for name in names:
        data = sdist(name, rng, words)
        file = f"{name}-1.0.tar.gz"
        with open(os.path.join(kept, file), "wb") as f:
            f.write(data)
        with open(os.path.join(kept, file + ".sha256"), "w") as f:
            f.write(f"{hashlib.sha256(data).hexdigest()}  {file}\n")
    open(os.path.join(kept, ".done"), "w").close()

shutil.copytree(kept, os.path.join(ctx, "index"), ignore=shutil.ignore_patterns(".done"), dirs_exist_ok=True)
with open(os.path.join(ctx, "requirements.txt"), "w") as f:
    f.writelines(f"{n}==1.0\n" for n in names[:-1])
with open(os.path.join(ctx, "requirements.next.txt"), "w") as f:
    f.writelines(f"{n}==1.0\n" for n in names)
