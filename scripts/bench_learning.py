#!/usr/bin/env python3
"""Does it learn? Trains on synthscapes and reports, every --every steps:

- GAN_Feat (training): the feature-matching loss as logged, averaged over the last --every steps.
  It is measured against the discriminator of that moment, which is itself learning, so it is a
  poor progress signal early on;
- GAN_Feat (frozen D): the same loss for the generator snapshot of that step, recomputed at the
  end against one fixed discriminator (the final one), eval mode, on the fixed validation batch.
  With D held still, it shows how far generated features are from real ones;
- GAN_Feat (initial D): the same, against the untrained discriminator of step 0 (random
  features, a fixed yardstick that no training step adapts);
- colour error: for each class, |mean colour of generated pixels - mean colour of real pixels|
  over a fixed set of validation label maps (generated in eval mode from the same labels),
  averaged over classes and RGB, in 0..255 levels.

    .venv/bin/python scripts/bench_learning.py [--config quickstart] [--steps 300] [--every 50]

Output is a markdown table (docs/benchmarks/learning.md holds a committed run).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def colour_error(gan, batch, num_classes) -> float:
    import numpy as np

    sem = gan.semantics(batch)
    fake, _ = gan.generate(sem, batch["image"], training=False)
    fake = (fake.numpy() + 1) * 127.5
    real = (batch["image"].numpy() + 1) * 127.5
    label = batch["label"].numpy()
    errs = [np.abs(fake[label == c].mean(0) - real[label == c].mean(0)).mean()
            for c in range(num_classes) if (label == c).sum() >= 50]
    return float(np.mean(errs))


def frozen_feature_matching(gan, batch, generator_weights) -> float:
    """GAN_Feat of a generator snapshot against the current (final) discriminator, eval mode."""
    from spade_tf import losses

    gan.generator.set_weights(generator_weights)
    sem = gan.semantics(batch)
    fake, _ = gan.generate(sem, batch["image"], training=False)
    pred_fake, pred_real = gan.discriminate(sem, fake, batch["image"], training=False)
    return float(losses.feature_matching_loss(pred_fake, pred_real, gan.config.loss.lambda_feat))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="quickstart")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    import keras

    from spade_tf.config import load_config
    from spade_tf.data import build_dataset
    from spade_tf.gan import GauGAN

    config = load_config(args.config, args.overrides)
    keras.utils.set_random_seed(config.train.seed)
    gan = GauGAN(config)
    gan.compile()
    val = next(iter(build_dataset(config, "val", batch_size=16, training=False)))
    train = build_dataset(config, "train", repeat=True)
    rows = [(0, float("nan"), colour_error(gan, val, config.model.num_classes), 0.0)]
    snapshots = [gan.generator.get_weights()]
    initial_d = gan.discriminator.get_weights()
    start = time.time()
    for done in range(args.every, args.steps + 1, args.every):
        h = gan.fit(train.skip(done - args.every), epochs=1, steps_per_epoch=args.every, verbose=0)
        rows.append((done, h.history["GAN_Feat"][-1], colour_error(gan, val, config.model.num_classes),
                     time.time() - start))
        snapshots.append(gan.generator.get_weights())
        print(f"step {done}: {rows[-1][1]:.3f} {rows[-1][2]:.1f} {rows[-1][3]:.0f}s", flush=True)
    final = snapshots[-1]
    frozen = [frozen_feature_matching(gan, val, w) for w in snapshots]
    gan.discriminator.set_weights(initial_d)
    initial = [frozen_feature_matching(gan, val, w) for w in snapshots]
    gan.generator.set_weights(final)
    m = config.model
    print(f"config {args.config}: {m.crop_size} px, ngf {m.base_filters}, ndf {m.disc_filters}, "
          f"batch {config.train.batch_size}, lr {config.train.lr} (TTUR), no VGG")
    print()
    print("| step | GAN_Feat, training (mean of the last steps) | GAN_Feat, frozen final D (val) "
          "| GAN_Feat, initial D (val) | per-class colour error (levels) | seconds |")
    print("|---|---|---|---|---|---|")
    for (step, fm, ce, sec), ffm, ifm in zip(rows, frozen, initial):
        print(f"| {step} | {'-' if fm != fm else f'{fm:.3f}'} | {ffm:.3f} | {ifm:.3f} | {ce:.1f} | {sec:.0f} |")


if __name__ == "__main__":
    main()
