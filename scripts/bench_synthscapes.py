#!/usr/bin/env python3
"""Benchmark: synthscapes pairs per second (rendering only, one thread), and the tf.data pipeline.

    .venv/bin/python scripts/bench_synthscapes.py [--size 128] [--runs 5] [--pairs 300]

Prints a markdown table; docs/benchmarks/synthscapes.md holds a committed run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def render_rate(size: int, pairs: int, runs: int) -> list[float]:
    from spade_tf.data import synthscapes

    for i in range(20):  # warm-up (first-call costs, work buffers)
        synthscapes.render([0, 0, i], size)
    rates = []
    for r in range(runs):
        start = time.perf_counter()
        for i in range(pairs):
            synthscapes.render([0, 0, r * pairs + i], size)
        rates.append(pairs / (time.perf_counter() - start))
    return rates


def pipeline_rate(size: int, pairs: int) -> float:
    from spade_tf.config import load_config
    from spade_tf.data import build_dataset

    config = load_config("synthscapes", [f"model.crop_size={size}", f"data.load_size={size}",
                                         f"data.synth_train_size={pairs}"])
    ds = build_dataset(config, "train", batch_size=8)
    for _ in ds.take(2):
        pass
    start = time.perf_counter()
    n = sum(int(b["label"].shape[0]) for b in ds)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pairs", type=int, default=300)
    args = p.parse_args()
    import numpy
    import PIL
    rates = render_rate(args.size, args.pairs, args.runs)
    pipe = pipeline_rate(args.size, 400)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
          f"numpy {numpy.__version__}, pillow {PIL.__version__}")
    print()
    print("| what | size | pairs/s (median) | runs |")
    print("|---|---|---|---|")
    print(f"| synthscapes.render, one thread | {args.size}x{args.size} | {statistics.median(rates):.0f} "
          f"| {', '.join(f'{r:.0f}' for r in rates)} |")
    print(f"| build_dataset (decode threads = AUTOTUNE, crop/flip, batch 8) | {args.size}x{args.size} "
          f"| {pipe:.0f} | 1 pass of 400 |")
    print()
    print("target: >= 200 pairs/s at 128x128 on one core")


if __name__ == "__main__":
    main()
