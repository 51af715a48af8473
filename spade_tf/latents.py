"""Latents from seeds: a VAE's z and OASIS' noise vector, the same on every machine."""

from __future__ import annotations

import tensorflow as tf


def latent_from_seed(seed, z_dim: int):
    """float32 [z_dim] from N(0, I) for an int ``seed``, stateless: a seed gives the same image
    on every server, in a ``.tflite`` fed by ``synthesize`` and in the studio (the export's
    ``png`` and ``seed`` signatures draw theirs with it)."""
    seed = tf.cast(seed, tf.int64)
    return tf.random.stateless_normal([z_dim], seed=tf.stack([seed, tf.constant(0, tf.int64)]))
