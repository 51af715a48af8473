#!/usr/bin/env python3
"""Training speed and memory: one G+D iteration (no VGG) at batch 1, per configuration.

Each configuration runs in its own process (peak RSS is per process) on a constant random batch
(the model's cost does not depend on the data; ADE20K itself is not available here):

    .venv/bin/python scripts/bench_training.py [--steps 5] [--only tiny,128px,ade20k]

Prints a markdown table (docs/benchmarks/training.md holds a committed run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "tiny": ("tiny", []),
    "128px": ("synthscapes", ["model.base_filters=32", "model.disc_filters=32"]),
    "ade20k": ("ade20k", []),
}


def worker(name: str, steps: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    from spade_tf.config import load_config
    from spade_tf.gan import GauGAN

    preset, overrides = CONFIGS[name]
    config = load_config(preset, overrides + ["train.batch_size=1"])
    m = config.model
    h, w = m.output_hw
    rng = np.random.default_rng(0)
    batch = {"label": rng.integers(0, m.num_classes, (1, h, w)).astype(np.int32),
             "image": rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32)}
    if m.use_instance:
        batch["instance"] = rng.integers(0, 5, (1, h, w)).astype(np.int32)
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    gan = GauGAN(config, vgg_loss=None)
    gan.compile()
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter() - self.t)

    t0 = time.perf_counter()
    gan.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    first = time.perf_counter() - t0
    gan.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
    med = statistics.median(times)
    counts = gan.networks.param_counts()
    print(json.dumps({"name": name, "size": f"{h}x{w}", "classes": m.semantic_channels,
                      "G": counts["generator"], "D": counts["discriminator"],
                      "first_step_s": first, "step_s": med, "steps": len(times),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--only", default=",".join(CONFIGS))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.steps)
        return
    import tensorflow as tf

    rows = []
    for name in args.only.split(","):
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}; "
          f"float32, no XLA, no VGG; batch 1; median of {args.steps} steps after the first")
    print()
    print("| config | size | semantic ch | G params | D params | first step (trace) s | step s | steps/s | images/s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['size']} | {r['classes']} | {r['G']:,} | {r['D']:,} | "
              f"{r['first_step_s']:.1f} | {r['step_s']:.3f} | {1 / r['step_s']:.2f} | "
              f"{1 / r['step_s']:.2f} | {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
