"""Run by test_distributed.py in its own process: a MirroredStrategy over 2 logical CPUs.

A training forward of the generator on 2 replicas (2 samples each) is compared with one device
on the same global batch of 4. Prints one JSON line with the measured differences.
Usage: python tests/mirrored_worker.py SPADE_NORM
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
from spade_tf.layers import SpectralConv2D, TorchBatchNorm  # noqa: E402
from spade_tf.networks import build_networks  # noqa: E402
from spade_tf.semantics import to_semantics  # noqa: E402


def layers_of(model, cls):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, cls)]


def main(spade_norm: str) -> None:
    config = load_config("tiny", [f"model.spade_norm={spade_norm}", "model.use_instance=false"])
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(4, 64, 64)).astype(np.int32)
    # Different samples per replica, so per-replica statistics really differ.
    label[2:] = np.minimum(label[2:], 1)
    sem = to_semantics(label, config=config)

    keras.utils.set_random_seed(0)
    single = build_networks(config, discriminator=False).generator
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build_networks(config, discriminator=False).generator
    mirrored.set_weights(single.get_weights())

    ref = single(sem, training=True).numpy()

    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(sem).batch(4))

    @tf.function
    def step(x):
        return strategy.run(lambda s: mirrored(s, training=True), args=(x,))

    out = step(next(iter(dataset)))
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)], 0)

    def replica_values(var):
        return [np.asarray(t) for t in strategy.experimental_local_results(var.value)]

    def compare(cls, names):
        """(max difference between the 2 replicas, max difference replica 0 vs one device)."""
        spread = vs_single = 0.0
        for m_layer, s_layer in zip(layers_of(mirrored, cls), layers_of(single, cls)):
            for name in names:
                vals = replica_values(getattr(m_layer, name))
                spread = max(spread, float(np.max(np.abs(vals[0] - vals[1]))))
                vs_single = max(vs_single, float(np.max(np.abs(
                    vals[0] - getattr(s_layer, name).numpy()))))
        return spread, vs_single

    uv_spread, uv_vs_single = compare(SpectralConv2D, ("u", "v"))
    bn_spread, bn_vs_single = compare(TorchBatchNorm, ("moving_mean", "moving_variance"))
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "num_spectral_layers": len(layers_of(mirrored, SpectralConv2D)),
        "num_bn_layers": len(layers_of(mirrored, TorchBatchNorm)),
        "output_vs_single": float(np.max(np.abs(got - ref))),
        "uv_spread": uv_spread, "uv_vs_single": uv_vs_single,
        "bn_spread": bn_spread, "bn_vs_single": bn_vs_single}))


if __name__ == "__main__":
    main(sys.argv[1])
