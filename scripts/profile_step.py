#!/usr/bin/env python3
"""Profiles one training iteration (or generator forward) with the TensorFlow profiler.

Writes a TensorBoard profile (open it with ``tensorboard --logdir LOGDIR``, Profile tab, which
needs the ``tensorboard-plugin-profile`` package) and prints the op types and ops that took the
most time, read from the profile's trace itself, so no plugin is needed for the table:

    .venv/bin/python scripts/profile_step.py --config ade20k [--what train|forward] [--logdir DIR]

Times are summed over TensorFlow's inter-op threads (2 here), so they add up to about twice the
wall time of the step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def op_times(xplane_path: str):
    """{op type: seconds}, {scope:op type: seconds} from a profile's ``*.xplane.pb``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    by_type, by_name = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's op events
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # ExecutorState::Process wraps ops
                    continue
                scope, kind = name.rsplit(":", 1)
                seconds = event.duration_ps / 1e12
                by_type[kind] += seconds
                by_name[re.sub(r"_\d+(?=/|$)", "", scope) + ":" + kind] += seconds
    return by_type, by_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="ade20k", help="preset or YAML file")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--what", choices=["train", "forward"], default="train")
    p.add_argument("--logdir", default="runs/profile")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf

    from spade_tf.config import load_config
    from spade_tf.gan import GauGAN

    config = load_config(args.config, args.set + ["train.batch_size=1"])
    m = config.model
    h, w = m.output_hw
    rng = np.random.default_rng(0)
    batch = {"label": tf.constant(rng.integers(0, m.num_classes, (1, h, w)).astype(np.int32)),
             "image": tf.constant(rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32))}
    if m.use_instance:
        batch["instance"] = tf.constant(rng.integers(0, 5, (1, h, w)).astype(np.int32))
    gan = GauGAN(config, vgg_loss=None)
    gan.compile()
    if args.what == "train":
        fn = tf.function(lambda: gan.train_step(batch)["GAN"])
    else:
        seg = gan.semantics(batch)
        fn = tf.function(lambda: gan.generator(seg, training=False))
    for _ in range(2):  # trace, then one untimed run
        fn().numpy()
    tf.profiler.experimental.start(args.logdir)
    t = time.perf_counter()
    fn().numpy()
    wall = time.perf_counter() - t
    tf.profiler.experimental.stop()
    path = max(glob.glob(os.path.join(args.logdir, "plugins", "profile", "*", "*.xplane.pb")),
               key=os.path.getmtime)
    by_type, by_name = op_times(path)
    total = sum(by_type.values())
    print(f"{args.what} {args.config}: {wall:.2f} s wall (profiled), {total:.2f} s of op time "
          f"over the inter-op threads; profile: {path}\n")
    print("| op type | s | % | ")
    print("|---|---|---|")
    for kind, s in by_type.most_common(args.top):
        print(f"| {kind} | {s:.3f} | {100 * s / total:.1f} |")
    print("\n| op | s |")
    print("|---|---|")
    for name, s in by_name.most_common(args.top):
        print(f"| {name} | {s:.3f} |")


if __name__ == "__main__":
    main()
