"""Run by test_training.py: 2 SGD steps of GauGAN.fit, as one MultiWorkerMirroredStrategy worker
(when TF_CONFIG is set) or as a single process. The chief (or the single process) writes every
network weight after each step to OUT_step1.npz and OUT_step2.npz (``.skip`` keeps the second
step on the second global batch). Usage: python tests/workers_worker.py OUT.npz
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spade_tf.config import load_config  # noqa: E402
from spade_tf.data import build_dataset  # noqa: E402
from spade_tf.gan import GauGAN  # noqa: E402


def main(out: str) -> None:
    multi = bool(os.environ.get("TF_CONFIG"))
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multi else tf.distribute.get_strategy()
    config = load_config("tiny", ["data.dataset=synthscapes", "model.num_classes=9",
                                  "model.contain_dontcare=false", "data.load_size=64",
                                  "data.synth_train_size=8", "train.batch_size=4",
                                  # O(1) activations, as in replicas_worker.py: with the default
                                  # gain 0.02, batch norm rescales tiny activations to unit
                                  # variance and magnifies float32 rounding accordingly.
                                  "model.init_gain=1.0"])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        gan = GauGAN(config)
        gan.compile(g_optimizer=keras.optimizers.SGD(0.01), d_optimizer=keras.optimizers.SGD(0.01))
    chief = not multi or json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0
    ds = build_dataset(config, "train", repeat=True)
    for step in (1, 2):  # one fit step at a time, weights saved after each
        gan.fit(ds.skip(4 * (step - 1)), epochs=1, steps_per_epoch=1, verbose=0)
        if chief:
            np.savez(out.replace(".npz", f"_step{step}.npz"),
                     **{v.path: v.numpy() for v in gan.generator.weights + gan.discriminator.weights})
    if chief:
        print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": int(gan.iterations_done.numpy())}))

if __name__ == "__main__":
    main(sys.argv[1])
