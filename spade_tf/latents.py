"""Latents from seeds: a VAE's z and OASIS' noise vector, the same on every machine."""

from __future__ import annotations

import tensorflow as tf


def latent_from_seed(seed, z_dim: int):
    """float32 [z_dim] from N(0, I) for an int ``seed``, stateless: a seed gives the same image
    on every server, in a ``.tflite`` fed by ``synthesize`` and in the studio (the export's
    ``png`` and ``seed`` signatures draw theirs with it)."""
    seed = tf.cast(seed, tf.int64)
    return tf.random.stateless_normal([z_dim], seed=tf.stack([seed, tf.constant(0, tf.int64)]))


def noise_map_from_seeds(label, seed: int, class_seeds, z_dim: int):
    """OASIS' 3D noise for one label map [H, W] of ids, as float32 [H, W, z_dim]: seed ``seed``'s
    vector everywhere, except in the pixels of each class ``c`` of ``class_seeds`` ({c: seed}),
    which get that seed's vector. With no ``class_seeds`` it is the plain seed's noise spread
    over the map, so it gives the image that ``seed`` gives; re-drawing one class's seed
    changes the noise only inside that class's pixels (the OASIS paper's local editing, which
    the studio's "re-roll" offers)."""
    import numpy as np

    label = np.asarray(label)
    out = np.empty(label.shape + (z_dim,), np.float32)
    out[...] = latent_from_seed(seed, z_dim).numpy()
    for c, s in (class_seeds or {}).items():
        out[label == int(c)] = latent_from_seed(int(s), z_dim).numpy()
    return out
