"""Run by test_training.py: 2 SGD steps of GauGAN.fit (one fit call, the dataset's first two
global batches in order), as one MultiWorkerMirroredStrategy worker (when TF_CONFIG is set) or as
a single process. The chief (or the single process) writes every network weight after each step
to OUT_step1.npz and OUT_step2.npz.

Usage: python tests/workers_worker.py OUT.npz [float32|float64]; WORKERS_SET="k=v k=v" adds
config overrides.

float64 runs the whole model in double precision: any algorithmic difference between the
strategies (loss scaling, a stale u/v, per-worker BN statistics) shows at full size there, while
rounding differences shrink to ~1e-15.
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


class SaveWeights(keras.callbacks.Callback):
    def __init__(self, out, gan, chief):
        super().__init__()
        self.out, self.gan, self.chief = out, gan, chief

    def on_train_batch_end(self, batch, logs=None):
        if self.chief:
            nets = self.gan.generator.weights + self.gan.discriminator.weights
            if self.gan.ema_generator is not None:
                nets += self.gan.ema_generator.weights
            np.savez(self.out.replace(".npz", f"_step{batch + 1}.npz"), **{v.path: v.numpy() for v in nets})


def main(out: str, dtype: str) -> None:
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    multi = bool(os.environ.get("TF_CONFIG"))
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multi else tf.distribute.get_strategy()
    config = load_config("tiny", ["data.dataset=synthscapes", "model.num_classes=9",
                                  "model.contain_dontcare=false", "data.load_size=64",
                                  "data.synth_train_size=8", "train.batch_size=4",
                                  # O(1) activations, as in replicas_worker.py: with the default
                                  # gain 0.02, batch norm rescales tiny activations to unit
                                  # variance and magnifies float32 rounding accordingly.
                                  "model.init_gain=1.0"]
                         + os.environ.get("WORKERS_SET", "").split())
    with strategy.scope():
        keras.utils.set_random_seed(0)
        gan = GauGAN(config)
        gan.compile(g_optimizer=keras.optimizers.SGD(0.01), d_optimizer=keras.optimizers.SGD(0.01))
    chief = not multi or json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0
    ds = build_dataset(config, "train", repeat=True)
    gan.fit(ds, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[SaveWeights(out, gan, chief)])
    if chief:
        dtypes = sorted({str(v.dtype) for v in gan.generator.weights + gan.discriminator.weights})
        print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                          "steps": int(gan.iterations_done.numpy()), "dtypes": dtypes}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "float32")
