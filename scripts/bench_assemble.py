#!/usr/bin/env python3
"""Baseline for scripts/bench-assemble.sh: what guided-diffusion-style scripts do to make the
evaluator's npz, i.e. open every PNG with PIL, np.stack them and np.savez(images, labels).

  bench_assemble.py savez SAMPLES_DIR N OUT.npz   time it; print wall time and peak RSS
  bench_assemble.py compare A.npz B.npz           check that two npz files hold equal arrays

Labels are i % 1000, as in the Rust benchmark (`npz_bench`), so that both outputs are equal.
"""
import os
import resource
import sys
import time

import numpy as np


def png_name(index, num_samples):
    # fidshard_worker::output::png_name: at least 6 digits, wider when the job needs it.
    width = max(6, len(str(max(num_samples - 1, 0))))
    return f"{index:0{width}d}.png"


def peak_rss_mib():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def savez(samples_dir, n, out):
    from PIL import Image

    start = time.perf_counter()
    images = []
    for i in range(n):
        with Image.open(os.path.join(samples_dir, png_name(i, n))) as im:
            images.append(np.asarray(im.convert("RGB")))
    arr = np.stack(images)
    del images
    labels = np.arange(n, dtype=np.int64) % 1000
    np.savez(out, arr, labels)
    wall = time.perf_counter() - start
    print(
        f"python PIL + np.stack + np.savez: {n} images: {wall:.2f} s wall, "
        f"{os.path.getsize(out) / 1e6:.0f} MB, peak RSS {peak_rss_mib():.1f} MiB"
    )


def compare(a, b):
    za, zb = np.load(a), np.load(b)
    for key in ["arr_0", "arr_1"]:
        x, y = za[key], zb[key]
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            sys.exit(f"{a} and {b} differ in {key}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
    print(f"{a} and {b} hold equal arr_0 {za['arr_0'].shape} and arr_1")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "savez":
        savez(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
