#!/usr/bin/env python3
"""Does it learn? Trains on synthscapes and reports, for every window of --every steps:

- GAN_Feat (training): the feature-matching loss as logged, mean over the window's steps
  +- its standard error (from the per-step values). It is measured against the discriminator
  of that moment, which is itself learning: it first rises while D learns to tell real from
  fake features, then falls as G catches up;
- GAN_Feat (frozen D): the same loss for the generator snapshot at the window's end, recomputed
  at the end of the run against one fixed discriminator (the final one), eval mode, on
  --val-maps fixed validation label maps (+- the standard error over batches of 8 maps). With D
  held still, only the generator changes between rows;
- colour error: for each class, |mean colour of generated pixels - mean colour of real pixels|
  over the same validation maps (generated in eval mode from their labels), averaged over
  classes and RGB, in 0..255 levels.

    .venv/bin/python scripts/bench_learning.py [--config quickstart] [--steps 300] [--every 50]

Output is a markdown table (docs/benchmarks/learning.md holds committed runs) and, with --plot,
a PNG of the three curves.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EVAL_BATCH = 8


def colour_error(gan, batches, num_classes) -> float:
    import numpy as np

    fakes, reals, labels = [], [], []
    for batch in batches:
        fake, _ = gan.generate(gan.semantics(batch), batch["image"], training=False)
        fakes.append((fake.numpy() + 1) * 127.5)
        reals.append((batch["image"].numpy() + 1) * 127.5)
        labels.append(batch["label"].numpy())
    fake, real, label = np.concatenate(fakes), np.concatenate(reals), np.concatenate(labels)
    errs = [np.abs(fake[label == c].mean(0) - real[label == c].mean(0)).mean()
            for c in range(num_classes) if (label == c).sum() >= 50]
    return float(np.mean(errs))


def frozen_feature_matching(gan, batches, generator_weights) -> tuple[float, float]:
    """GAN_Feat of a generator snapshot against the current discriminator, eval mode:
    mean and standard error over the evaluation batches."""
    import numpy as np

    from spade_tf import losses

    gan.generator.set_weights(generator_weights)
    values = []
    for batch in batches:
        sem = gan.semantics(batch)
        fake, _ = gan.generate(sem, batch["image"], training=False)
        pred_fake, pred_real = gan.discriminate(sem, fake, batch["image"], training=False)
        values.append(float(losses.feature_matching_loss(pred_fake, pred_real,
                                                         gan.config.loss.lambda_feat)))
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values)))


class PerStep:
    """Per-step values of a logged loss: Keras logs running means within an epoch."""

    def __init__(self, name):
        import keras

        outer = self
        self.values = []

        class _Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                mean = float(logs[name])
                outer.values.append((batch + 1) * mean - batch * outer._last if batch else mean)
                outer._last = mean

        self._last = 0.0
        self.callback = _Callback()


def plot(rows, path, title):
    from PIL import Image, ImageDraw

    w, h, pad = 900, 300, 40
    img = Image.new("RGB", (w, h * 3), "white")
    draw = ImageDraw.Draw(img)
    steps = [r["step"] for r in rows]
    series = [("GAN_Feat, training (window mean)", [r["train_fm"] for r in rows]),
              ("GAN_Feat, frozen final D", [r["frozen_fm"] for r in rows]),
              ("per-class colour error (levels)", [r["colour"] for r in rows])]
    for i, (name, ys) in enumerate(series):
        top = i * h
        pts = [(s, y) for s, y in zip(steps, ys) if y == y]
        lo, hi = min(y for _, y in pts), max(y for _, y in pts)
        span = (hi - lo) or 1.0
        xy = [(pad + (w - 2 * pad) * s / max(steps), top + h - pad - (h - 2 * pad) * (y - lo) / span)
              for s, y in pts]
        draw.rectangle([pad, top + pad, w - pad, top + h - pad], outline="gray")
        draw.line(xy, fill="navy", width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="navy")
        draw.text((pad, top + 10), f"{title}: {name}  (min {lo:.2f}, max {hi:.2f}; x: step 0..{max(steps)})",
                  fill="black")
    tmp = str(path) + ".tmp.png"
    img.save(tmp)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default="quickstart", help="preset name or YAML path")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--every", type=int, default=50, help="steps per window (one table row)")
    p.add_argument("--val-maps", type=int, default=64, help="validation label maps to evaluate on")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value override")
    p.add_argument("--plot", help="write the curves to this PNG")
    args = p.parse_args()

    import keras
    from tqdm import tqdm

    from spade_tf.config import load_config
    from spade_tf.data import build_dataset
    from spade_tf.gan import GauGAN

    config = load_config(args.config, args.overrides)
    keras.utils.set_random_seed(config.train.seed)
    gan = GauGAN(config)
    gan.compile()
    val = list(build_dataset(config, "val", batch_size=EVAL_BATCH, training=False)
               .take(args.val_maps // EVAL_BATCH))
    train = build_dataset(config, "train", repeat=True)
    num_classes = config.model.num_classes
    rows = [dict(step=0, train_fm=float("nan"), train_se=float("nan"),
                 colour=colour_error(gan, val, num_classes), seconds=0.0)]
    snapshots = [gan.generator.get_weights()]
    start = time.time()
    bar = tqdm(range(args.every, args.steps + 1, args.every), desc="windows", unit="window")
    for done in bar:
        per_step = PerStep("GAN_Feat")
        gan.fit(train.skip(done - args.every), epochs=1, steps_per_epoch=args.every, verbose=0,
                callbacks=[per_step.callback])
        v = per_step.values
        mean = sum(v) / len(v)
        se = (sum((x - mean) ** 2 for x in v) / (len(v) - 1) / len(v)) ** 0.5
        rows.append(dict(step=done, train_fm=mean, train_se=se,
                         colour=colour_error(gan, val, num_classes), seconds=time.time() - start))
        snapshots.append(gan.generator.get_weights())
        bar.set_postfix(GAN_Feat=f"{mean:.2f}", colour=f"{rows[-1]['colour']:.1f}")
    for row, weights in zip(rows, snapshots):
        row["frozen_fm"], row["frozen_se"] = frozen_feature_matching(gan, val, weights)
    m = config.model
    print(f"config {args.config}: {m.crop_size} px, ngf {m.base_filters}, ndf {m.disc_filters}, "
          f"batch {config.train.batch_size}, lr {config.train.lr} "
          f"({'TTUR' if config.train.ttur else 'no TTUR'}), no VGG; {len(val) * EVAL_BATCH} val maps")
    print()
    print("| step | GAN_Feat, training (window mean ± s.e.) | GAN_Feat, frozen final D (val, ± s.e.) "
          "| per-class colour error (levels) | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        train_fm = "-" if r["train_fm"] != r["train_fm"] else f"{r['train_fm']:.2f} ± {r['train_se']:.2f}"
        print(f"| {r['step']} | {train_fm} | {r['frozen_fm']:.2f} ± {r['frozen_se']:.2f} "
              f"| {r['colour']:.1f} | {r['seconds']:.0f} |")
    if args.plot:
        plot(rows, args.plot, args.config)
        print(f"\ncurves: {args.plot}")


if __name__ == "__main__":
    main()
