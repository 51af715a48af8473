#!/usr/bin/env python3
"""Float32 drift of the optimised generator's gradients, against the plain form and float64.

tests/test_performance.py compares the optimised generator (every perf option on) with the
plain form in float32 on the tiny config at 128 px with "more" upsampling (a 2x2 latent, whose
batch norms see 8 values per channel). Over 8 random weight draws (seeds 0-7, in this order, in
one process: the draws depend on the process's history, not on the seed alone) two put fc's
kernel gradient about 2e-3 off (2026-12-02). For each draw over 1e-5 this prints how far each
float32 form is from the float64 plain form on the same weights:

- a draw where both forms are as far off: the draw is ill-conditioned;
- a draw where only the optimised form is off: a float32 accuracy loss that is still open
  (float64 shows the forms are the same function).

    .venv/bin/python scripts/float32_drift.py [--seeds 8]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8, help="weight draws (default 8)")
    args = p.parse_args()
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT / "tests"))
    from test_performance import ALL_ON, PLAIN, _run_generator
    from spade_tf.config import load_config
    from spade_tf.networks import build_networks
    from spade_tf.semantics import to_semantics

    config = load_config("tiny", ["model.num_upsampling_layers=more", "model.crop_size=128"])
    m = config.model
    h, w = m.output_hw

    def inputs(dtype):  # the test's inputs
        rng = np.random.default_rng(0)
        label = rng.integers(0, m.num_classes, (2, h, w)).astype(np.int32)
        label[:, :8, :8] = 255
        inst = rng.integers(0, 3, (2, h, w)).astype(np.int32)
        return (to_semantics(label, inst, config=config, dtype=dtype),
                tf.constant(rng.standard_normal((2, h, w, 3)), dtype))

    def worst(xs, ys, paths):  # the test's measure: relative to max(own size, largest gradient)
        scale = max(np.abs(y).max() for y in ys)
        return max((float(np.abs(a - b).max() / max(np.abs(b).max(), scale)), p)
                   for a, b, p in zip(xs, ys, paths))

    drifted = []
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        seg, dy = inputs(tf.float32)
        ref = build_networks(config, perf=PLAIN, discriminator=False, encoder=False, seed=0)
        weights = [v.numpy() for v in ref.generator.weights]
        plain = _run_generator(ref, seg, dy)[2]
        opt = build_networks(config, perf=ALL_ON, discriminator=False, encoder=False, seed=0)
        for v, x in zip(opt.generator.weights, weights):
            v.assign(x)
        optimised = _run_generator(opt, seg, dy)[2]
        paths = [v.path for v in ref.generator.trainable_variables]
        err, path = worst(optimised, plain, paths)
        print(f"draw {seed}: optimised vs plain, float32: {err:.2e} ({path})", flush=True)
        if err > 1e-5:
            drifted.append((seed, weights, plain, optimised, paths))
    if not drifted:
        return
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    seg, dy = inputs(tf.float64)
    exact = build_networks(config, perf=PLAIN, discriminator=False, encoder=False, seed=0)
    for seed, weights, plain, optimised, paths in drifted:
        for v, x in zip(exact.generator.weights, weights):
            v.assign(x.astype(np.float64) if x.dtype.kind == "f" else x)
        truth = _run_generator(exact, seg, dy)[2]
        (ep, pp), (eo, po) = worst(plain, truth, paths), worst(optimised, truth, paths)
        print(f"draw {seed}: vs float64: plain {ep:.2e} ({pp}), optimised {eo:.2e} ({po})")


if __name__ == "__main__":
    main()
