"""Run by test_training.py in its own process: one full G+D step on 1 vs 2 replicas.

Both use SGD (Adam would almost cancel a wrongly scaled gradient) and start from identical
weights; every variable (trainable, BN statistics, spectral-norm u/v) is compared after one
``fit`` step on the same global batch of 4. Prints one JSON line.
Usage: python tests/replicas_worker.py [--no-scaling]; REPLICAS_SET="k=v k=v" adds config overrides,
REPLICAS_DTYPE=float64 runs in double precision, REPLICAS_STEPS the number of steps.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from spade_tf.config import load_config  # noqa: E402
from spade_tf.data import build_dataset  # noqa: E402
from spade_tf.gan import GauGAN  # noqa: E402


LR = float(os.environ.get("REPLICAS_LR", "0.01"))


def make(config, strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        gan = GauGAN(config)
        gan.compile(g_optimizer=keras.optimizers.SGD(LR), d_optimizer=keras.optimizers.SGD(LR))
    return gan


def main() -> None:
    dtype = os.environ.get("REPLICAS_DTYPE", "float32")
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    if "--local-statistics" in sys.argv:  # the control of OASIS' global-batch statistics
        import spade_tf.losses
        spade_tf.losses._global_sum = lambda x: x
    if "--no-scaling" in sys.argv:  # the control: what the test must catch
        GauGAN._scale_for_replicas = staticmethod(lambda terms: tf.add_n(list(terms.values())))
    config = load_config("tiny", ["data.dataset=synthscapes", "model.num_classes=9",
                                  "model.contain_dontcare=false", "data.load_size=64",
                                  "data.synth_train_size=8", "train.batch_size=4",
                                  "model.init_gain=1.0"] + os.environ.get("REPLICAS_SET", "").split())
    ds = build_dataset(config, "train", repeat=True)
    single = make(config, tf.distribute.get_strategy())
    mirrored = make(config, tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()))
    for a, b in zip(single.networks.as_dict().values(), mirrored.networks.as_dict().values()):
        for va, vb in zip(a.weights, b.weights):
            vb.assign(va.numpy())
    before = {v.path: v.numpy().copy() for v in single.generator.weights}
    steps = int(os.environ.get("REPLICAS_STEPS", "1"))
    single.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    mirrored.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    worst, worst_name, moved = 0.0, "", 0.0
    nets = ["generator", "discriminator"] + (["ema_generator"] if single.ema_generator else [])
    for net in nets:
        for va, vb in zip(getattr(single, net).weights, getattr(mirrored, net).weights):
            assert va.path == vb.path
            d = float(np.max(np.abs(va.numpy() - vb.numpy())))
            if d > worst:
                worst, worst_name = d, va.path
            if va.path in before:
                moved = max(moved, float(np.max(np.abs(va.numpy() - before[va.path]))))
    print(json.dumps({"max_abs_diff": worst, "worst_variable": worst_name,
                      "max_update": moved, "replicas": mirrored.distribute_strategy.num_replicas_in_sync}))


if __name__ == "__main__":
    main()
