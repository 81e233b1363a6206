#!/usr/bin/env python3
"""bigcontext's context, the same bytes on every run (seeded generator).

vendor/: 200 packages x 100 files = 20,000 files, ~200 MB in all; sizes spread from tens of bytes
to a few hundred KiB; three quarters text-like (compresses ~3x like source code), a quarter random
bytes (like binaries and images). src/: 20 small C files. Usage: gen.py CONTEXT_DIR CACHE_DIR
"""
import os
import random
import sys

ctx = sys.argv[1]
rng = random.Random(20261122)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12))) for _ in range(4000)]
text_pool = " ".join(rng.choice(words) + ("\n" if rng.random() < 0.1 else "") for _ in range(400_000)).encode()
binary_pool = rng.randbytes(4 << 20)

target_total = 200 << 20
sizes = [int(rng.lognormvariate(8.3, 1.3)) + 16 for _ in range(20_000)]
scale = target_total / sum(sizes)
sizes = [max(16, min(int(s * scale), len(binary_pool) // 2)) for s in sizes]

n = 0
for pkg in range(200):
    for f in range(100):
        sub = "lib" if f % 2 else "dist"
        d = os.path.join(ctx, "vendor", f"pkg{pkg:03d}", sub)
        os.makedirs(d, exist_ok=True)
        size = sizes[n]
        n += 1
        if rng.random() < 0.75:
            pool, name = text_pool, f"mod_{f:03d}.js"
        else:
            pool, name = binary_pool, f"blob_{f:03d}.bin"
        start = rng.randrange(0, len(pool) - size)
        with open(os.path.join(d, name), "wb") as out:
            out.write(pool[start : start + size])

src = os.path.join(ctx, "src")
os.makedirs(src, exist_ok=True)
for i in range(20):
    name = "main.c" if i == 0 else f"unit{i:02d}.c"
    with open(os.path.join(src, name), "w") as out:
        for j in range(200):
            out.write(f"int f_{i}_{j}(int x) {{ return x * {j} + {i}; }}\n")
