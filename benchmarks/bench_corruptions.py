"""Throughput of compaudit's corruptions against the ``imagecorruptions`` package.

compaudit applies the package's formulas itself wrapped with per-image seeding (a
BLAKE2 hash of the image), input conversion and the RNG lock; this measures what that
costs, one image at a time on one core, per corruption at one severity.

Run: ``python benchmarks/bench_corruptions.py [--severity 3] [--sizes 64 224]``
(needs the ``corruptions`` extra).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import numpy as np

from compaudit.data.corruptions import ALL_CORRUPTIONS, corrupt


def images_per_second(fn, images: list[np.ndarray], min_seconds: float) -> float:
    """Images per second of ``fn`` over ``images``, cycled for at least ``min_seconds``."""
    fn(images[0])  # warm-up: numba compiles glass_blur, frost textures are read
    done, start = 0, time.perf_counter()
    while True:
        fn(images[done % len(images)])
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and done >= 3:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--min-seconds", type=float, default=0.6, help="per measurement")
    args = parser.parse_args()

    import imagecorruptions as ic

    rng = np.random.default_rng(0)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, imagecorruptions-imaug, "
        f"severity {args.severity}, one image per call"
    )
    head = f"{'compaudit img/s':>16} {'reference img/s':>16} {'ratio':>6}"
    print(f"{'corruption':<18} {'size':>5} {head}")
    for size in args.sizes:
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(8)]
        ratios = []
        for name in ALL_CORRUPTIONS:
            # A new seed per call: with 8 images cycled at one seed, frost would reuse
            # the same few textures (their decoding time differs 5x) and skew the figure.
            seeds = itertools.count()
            ours = images_per_second(
                lambda x, n=name, s=seeds: corrupt(x, n, args.severity, seed=next(s)),
                images,
                args.min_seconds,
            )
            np.random.seed(0)
            ref = images_per_second(
                lambda x, n=name: ic.corrupt(x, severity=args.severity, corruption_name=n),
                images,
                args.min_seconds,
            )
            ratios.append(ours / ref)
            print(f"{name:<18} {size:>5} {ours:>16.1f} {ref:>16.1f} {ours / ref:>6.2f}")
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"{'geometric mean':<18} {size:>5} {'':>16} {'':>16} {geo:>6.2f}")


if __name__ == "__main__":
    main()
