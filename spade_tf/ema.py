"""The generator's exponential moving average (``train.ema_decay``), as OASIS keeps it.

boschresearch/OASIS ``utils/utils.py`` ``update_EMA``: after every training iteration, every
entry of G's state (weights, BatchNorm running statistics, spectral-norm u and v) becomes
``decay * ema + (1 - decay) * g``; before sampling, scoring or saving, the averaged generator
runs in training mode over training batches so that its BatchNorm statistics belong to its own
(averaged) weights. NVlabs/imaginaire and StyleGAN keep and export such an average too.

Here the average lives beside G in the training checkpoint (so resume stays bit-exact). The
statistics are refreshed on a copy, at export, synthesis, evaluation and sampling, never in
the training state: a refresh there would make an interrupted and resumed run differ from an
uninterrupted one.
"""

from __future__ import annotations

import logging
import weakref

import tensorflow as tf

log = logging.getLogger(__name__)


def averaged_variables(model) -> list:
    """The variables that are averaged: every floating-point one (the noise generators' int
    states are not state of the network)."""
    return [v for v in model.weights if tf.as_dtype(v.dtype).is_floating]


def warmed_up_decay(decay: float, step):
    """The decay at 0-based ``step`` with a warm-up: ``min(decay, (1 + step) / (10 + step))``,
    as ``tf.train.ExponentialMovingAverage(num_updates=step)``. OASIS has none (its runs are
    100k+ iterations); without it the average of a run of a few thousand steps at decay 0.999
    still holds e^-1 of the initial weights, and its images are noise (seen on oasis_light after
    808 steps: segmentation mIoU 0.22 from the average, G's own pictures recognisable)."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + step) / (10.0 + step))


def update_moving_average(ema_model, model, decay, step=None) -> None:
    """``ema <- decay * ema + (1 - decay) * g`` for every float variable of ``model``;
    ``step`` given: with ``warmed_up_decay``'s warm-up.

    Under ``tf.distribute`` the update runs once in cross-replica context (``merge_call``):
    G's variables are mirrored and identical on every replica after the optimizer step, and so
    are the averages; a replica-context assignment of Keras' default ("none" aggregation)
    variables is not allowed there.
    """
    pairs = list(zip(averaged_variables(ema_model), averaged_variables(model)))

    def apply(*_):
        d = float(decay) if step is None else warmed_up_decay(decay, step)
        for e, g in pairs:
            dt = tf.as_dtype(e.dtype)
            e.assign(tf.cast(d, dt) * e + tf.cast(1.0 - d, dt) * tf.cast(g, dt))

    ctx = tf.distribute.get_replica_context()
    if ctx is None or not tf.distribute.has_strategy():
        apply()
    else:
        ctx.merge_call(apply)


def copy_weights(target, source) -> None:
    """Every float variable of ``source`` into ``target`` (the same architecture)."""
    for t, s in zip(averaged_variables(target), averaged_variables(source)):
        t.assign(s)


_REFRESH_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def refresh_batch_statistics(generator, batches, config) -> int:
    """OASIS' "collect running stats for batchnorm": ``generator`` in training mode over
    ``batches`` (dicts from ``spade_tf.data.build_dataset``), which updates its BatchNorm
    running statistics (and runs its power iterations). Returns the batches used.

    Deterministic: the latents (a VAE's z, OASIS' noise) of the k-th image are seed k's
    (``spade_tf.export.latent_from_seed``), so that every process that refreshes the same
    checkpoint on the same batches (export, synthesize, the studio) gets the same weights."""
    from spade_tf.config import Family
    from spade_tf.latents import latent_from_seed
    from spade_tf.semantics import to_semantics

    m = config.model
    step = _REFRESH_STEPS.get(generator)
    if step is None:  # traced once per generator (the training grids refresh a copy often)
        if m.family is Family.OASIS:
            step = tf.function(lambda sem, z: generator(sem, noise=z, training=True))
        else:
            step = tf.function(lambda sem, z: generator(sem, z=z, training=True))
        _REFRESH_STEPS[generator] = step
    n = index = 0
    for batch in batches:
        sem = to_semantics(batch["label"], batch.get("instance"), config=config)
        k = int(sem.shape[0])
        z = (tf.stack([latent_from_seed(index + i, m.z_dim) for i in range(k)])
             if m.has_latent else None)
        step(sem, z)
        n, index = n + 1, index + k
    return n


def has_batch_statistics(config) -> bool:
    """Whether the generator has running statistics to refresh (SPADE's batch norms)."""
    return config.model.spade_norm.value in ("sync_batch", "batch")


def prepared_ema_generator(networks, config, batches=None, max_batches=None):
    """The averaged generator, ready for inference, and a line saying what was done.

    Its BatchNorm statistics are refreshed over ``max_batches`` (default
    ``train.ema_stat_batches``) training batches: from ``batches`` when given, else from the
    config's training data. Where no data can be read (an export on another machine), the
    averaged statistics are used as they are, and the line says so. ``networks.ema_generator``
    itself is changed (load a fresh copy to keep the stored state).
    """
    g = networks.ema_generator
    decay = config.train.ema_decay
    k = config.train.ema_stat_batches if max_batches is None else int(max_batches)
    if not has_batch_statistics(config) or k == 0:
        return g, f"ema_generator (decay {decay:g}; no batch statistics refreshed)"
    if batches is None:
        try:
            from spade_tf.data.pipeline import build_dataset

            # evaluation preprocessing (no random crop or flip): the same batches every time
            batches = build_dataset(config, "train", training=False)
        except (ValueError, FileNotFoundError, OSError) as e:
            log.warning("the averaged generator's BN statistics are not refreshed: the training "
                        "data cannot be read (%s)", e)
            return g, (f"ema_generator (decay {decay:g}; BN statistics averaged, not refreshed: "
                       f"no training data here)")
    n = refresh_batch_statistics(g, (b for _, b in zip(range(k), batches)), config)
    return g, (f"ema_generator (decay {decay:g}; BN statistics refreshed over {n} training "
               f"batches)")


def inference_generator(networks, config, batches=None):
    """(generator, description): what export, synthesis, evaluation and the studio run: the
    averaged generator (statistics refreshed) when the checkpoint has one, else G."""
    if networks.ema_generator is None:
        return networks.generator, (networks.generator_note
                                    or "generator (no moving average in this checkpoint)")
    return prepared_ema_generator(networks, config, batches)
