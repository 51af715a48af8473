"""Multiply-adds of one training iteration (G step + D step, batch 1, no VGG), from its graph.

Traces ``GauGAN.train_step`` with fixed shapes and counts the dense work of every conv and
matmul that the step runs (``spade_tf.flops.graph_multiply_adds`` with ``used_only``): forward
convs (``Conv2D``, which also covers the forward-conv forms of the gradients),
``Conv2DBackpropInput`` and ``Conv2DBackpropFilter``. Gradient ops whose result nothing uses
(e.g. D's kernel gradients in the G step, which TensorFlow's gradient functions build and the
runtime prunes) are left out: only ops that the step's outputs or its stateful ops (the
optimizer updates, the BN and spectral-norm state) depend on are counted.

With a measured time this gives the iteration's effective rate, to set against the machine's
matmul rate: the bound on what faster kernels alone can give.

    .venv/bin/python scripts/iteration_macs.py --config ade20k [--plain]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="ade20k", help="preset or YAML file")
    p.add_argument("--plain", action="store_true",
                   help="every layer in the reference's form (benchmark.py's PLAIN)")
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf

    from benchmark import PLAIN
    from spade_tf.config import load_config
    from spade_tf.flops import graph_multiply_adds
    from spade_tf.gan import GauGAN

    # perf.uniform_regions is off in both forms: its work depends on the label map (and its
    # gathers have data-dependent shapes, which a static count cannot read).
    config = load_config(args.config, (PLAIN if args.plain else ["perf.uniform_regions=false"])
                         + ["train.batch_size=1"])
    m = config.model
    h, w = m.output_hw
    rng = np.random.default_rng(0)
    batch = {"label": tf.constant(rng.integers(0, m.num_classes, (1, h, w)), tf.int32),
             "image": tf.constant(rng.uniform(-1, 1, (1, h, w, 3)), tf.float32)}
    if m.use_instance:
        batch["instance"] = tf.constant(rng.integers(0, 5, (1, h, w)), tf.int32)
    gan = GauGAN(config, vgg_loss=None)
    gan.compile()
    step = tf.function(gan.train_step).get_concrete_function(batch)
    counts = graph_multiply_adds(step, used_only=True)
    total = sum(counts.values())
    form = "plain" if args.plain else "optimised, perf.uniform_regions off"
    print(f"{args.config} ({form}) training iteration: {total / 1e9:.1f} G multiply-adds "
          f"({2 * total / 1e9:.0f} GFLOP)")
    for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {kind}: {n / 1e9:.1f} G")


if __name__ == "__main__":
    main()
