"""What each family of networks minimises: the losses of its G step and its D step.

``spade_tf.gan.GauGAN.train_step`` is one step for every family (G step, D step on a fake from
the updated G, the moving average of G); it asks the family's objective for the loss terms:

- ``SpadeObjective``: NVlabs/SPADE and tzt101/CLADE (spec §6-7): the multiscale PatchGAN D on
  [label map, image], hinge (or another ``gan_mode``), feature matching, VGG, the VAE's KL.
- ``OasisObjective``: boschresearch/OASIS (``models/models.py``): the U-Net D on the image
  alone, the class-balanced N+1 cross-entropy, LabelMix, and 3D noise for G.

Every term is a per-replica mean (the KL a sum); ``GauGAN._scale_for_replicas`` scales them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from spade_tf import losses
from spade_tf.config import Config, Family
from spade_tf.models.spade.encoder import reparameterize

# Loss terms that are sums over the batch rather than means (see GauGAN._scale_for_replicas).
SUM_TERMS = frozenset({"KLD"})


def draw_for_global_batch(draw, local_batch, step, salt, seed):
    """Random numbers for this replica's share of the global batch, the same whatever the
    number of replicas: every replica draws the whole global batch from a stateless seed
    (``seed``, ``step``, ``salt``) and keeps its own rows. One process on the global batch
    draws exactly the same numbers (1 replica = N replicas), and a resumed run draws what the
    uninterrupted one drew at that step.

    Args:
        draw: ``draw(n, seed)`` -> a tensor with n rows (a ``tf.random.stateless_*`` call).
        local_batch: this replica's batch size.
        step: the training step (an int64 tensor).
        salt: a small int telling apart the draws of one step.
        seed: the run's seed.
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    rid = ctx.replica_id_in_sync_group if ctx is not None else 0
    stateless_seed = tf.stack([tf.constant(seed, tf.int64),
                               tf.cast(step, tf.int64) * 16 + int(salt)])
    values = draw(local_batch * replicas, stateless_seed)
    start = tf.cast(rid, tf.int32) * local_batch
    return values[start:start + local_batch]


class SpadeObjective:
    """SPADE's (and CLADE's) losses (spec §6): ``GAN`` (+ ``GAN_Feat``, ``VGG``, ``KLD``) for G,
    ``D_Fake`` and ``D_real`` for D."""

    d_names = ("D_Fake", "D_real")

    def __init__(self, config: Config, gan):
        self.config, self.gan = config, gan
        names = ["GAN"]
        if config.loss.feature_matching:
            names.append("GAN_Feat")
        if gan.vgg_loss is not None:
            names.append("VGG")
        if gan.encoder is not None:
            names.append("KLD")
        self.g_names = tuple(names)

    def generate(self, semantics, real, training):
        """fake, kld (None without the VAE): the reference's generate_fake."""
        gan = self.gan
        if gan.encoder is None:
            return gan.generator(semantics, training=training), None
        mu, logvar = gan.encoder(real, training=training)
        eps = keras.random.normal(tf.shape(mu), seed=gan.noise, dtype=mu.dtype)
        z = reparameterize(mu, logvar, eps)
        kld = losses.kl_divergence(mu, logvar) * self.config.loss.lambda_kld
        return gan.generator(semantics, z=z, training=training), kld

    def discriminate(self, semantics, fake, real, training):
        """D on [fake; real] stacked on the batch axis, split into (fake, real) outputs."""
        d = self.gan.discriminator
        sem = tf.cast(semantics, fake.dtype)
        images = tf.concat([fake, tf.cast(real, fake.dtype)], 0)
        if d.splits_input:
            # (labels, images) apart (perf.split_discriminator_input): no concat to slice again,
            # and the label map once for both halves, whose maps are the same, so that D's label
            # part (first conv, pooling) runs once, not twice
            outs = d((sem, images), training=training)
        else:
            outs = d(tf.concat([tf.concat([sem, sem], 0), images], -1), training=training)
        n = tf.shape(fake)[0]
        return ([[f[:n] for f in scale] for scale in outs], [[f[n:] for f in scale] for scale in outs])

    def generator_terms(self, semantics, real, training):
        fake, kld = self.generate(semantics, real, training)
        pred_fake, pred_real = self.discriminate(semantics, fake, real, training)
        lc = self.config.loss
        terms = {"GAN": losses.generator_gan_loss(pred_fake, lc.gan_mode)}
        if lc.feature_matching:
            terms["GAN_Feat"] = losses.feature_matching_loss(pred_fake, pred_real, lc.lambda_feat)
        if self.gan.vgg_loss is not None:
            terms["VGG"] = self.gan.vgg_loss(fake, real)
        if kld is not None:
            terms["KLD"] = kld
        return terms, fake

    def discriminator_terms(self, semantics, real, training):
        fake, _ = self.generate(semantics, real, training)
        fake = tf.stop_gradient(fake)
        pred_fake, pred_real = self.discriminate(semantics, fake, real, training)
        d_real, d_fake = losses.discriminator_losses(pred_real, pred_fake, self.config.loss.gan_mode)
        return {"D_Fake": d_fake, "D_real": d_real}

    def eval_terms(self, semantics, real):
        """Both steps' terms in inference mode (running statistics, nothing updated)."""
        terms, fake = self.generator_terms(semantics, real, training=False)
        pred_fake, pred_real = self.discriminate(semantics, fake, real, training=False)
        d_real, d_fake = losses.discriminator_losses(pred_real, pred_fake, self.config.loss.gan_mode)
        terms.update({"D_Fake": d_fake, "D_real": d_real})
        return terms


class OasisObjective:
    """OASIS' losses (``models/models.py`` ``OASIS_model.forward``): ``G_adv`` (+ ``VGG``) for G;
    ``D_fake``, ``D_real`` and ``D_labelmix`` for D, with D run on the fake, the real and the
    LabelMix image in turn (one power iteration each, as OASIS).

    The class weights and LabelMix are statistics of the global batch under ``tf.distribute``
    (``losses.oasis_class_weights``, ``draw_for_global_batch``); G's noise and LabelMix's bits
    are drawn statelessly from the step, so that 1 replica = N replicas and resume is exact.
    """

    d_names = ("D_fake", "D_real", "D_labelmix")

    def __init__(self, config: Config, gan):
        self.config, self.gan = config, gan
        self.g_names = ("G_adv", "VGG") if gan.vgg_loss is not None else ("G_adv",)
        if not config.loss.labelmix:
            self.d_names = ("D_fake", "D_real")
        self.channels = config.model.num_label_channels

    def _onehot(self, semantics):
        return semantics[..., :self.channels]

    def _noise(self, semantics, salt):
        g = self.gan.generator
        if not g.noise_3d:
            return None
        n = int(semantics.shape[0]) if semantics.shape[0] is not None else tf.shape(semantics)[0]
        return draw_for_global_batch(
            lambda total, s: tf.random.stateless_normal([total, g.z_dim], s, dtype=tf.float32),
            n, self.gan.iterations_done, salt, self.config.train.seed)

    def generate(self, semantics, real=None, training=False, salt=0):
        """fake, None: G on the label map with fresh per-image noise."""
        return self.gan.generator(semantics, noise=self._noise(semantics, salt),
                                  training=training), None

    def _weight_map(self, onehot):
        if not self.config.loss.class_balancing:
            return None
        return losses.oasis_weight_map(onehot)

    def generator_terms(self, semantics, real, training):
        fake, _ = self.generate(semantics, real, training, salt=1)
        onehot = self._onehot(semantics)
        logits = self.gan.discriminator(fake, training=training)
        terms = {"G_adv": losses.oasis_real_loss(logits, onehot, self._weight_map(onehot))}
        if self.gan.vgg_loss is not None:
            terms["VGG"] = self.gan.vgg_loss(fake, real)
        return terms, fake

    def discriminator_terms(self, semantics, real, training, fake=None):
        if fake is None:
            fake, _ = self.generate(semantics, real, training, salt=2)
        fake = tf.stop_gradient(fake)
        real = tf.cast(real, fake.dtype)
        onehot = self._onehot(semantics)
        d = self.gan.discriminator
        d_fake = d(fake, training=training)
        d_real = d(real, training=training)
        terms = {"D_fake": losses.oasis_fake_loss(d_fake),
                 "D_real": losses.oasis_real_loss(d_real, onehot, self._weight_map(onehot))}
        if self.config.loss.labelmix:
            n = int(onehot.shape[0]) if onehot.shape[0] is not None else tf.shape(onehot)[0]
            c = self.channels
            bits = draw_for_global_batch(
                lambda total, s: tf.random.stateless_uniform([total, c], s, 0, 2, dtype=tf.int32),
                n, self.gan.iterations_done, 3, self.config.train.seed)
            mask = losses.labelmix_mask(onehot, bits=bits, dtype=fake.dtype)
            d_mixed = d(losses.labelmix_images(mask, real, fake), training=training)
            terms["D_labelmix"] = losses.labelmix_loss(d_mixed, d_fake, d_real, mask,
                                                       self.config.loss.lambda_labelmix)
        return terms

    def eval_terms(self, semantics, real):
        terms, fake = self.generator_terms(semantics, real, training=False)
        terms.update(self.discriminator_terms(semantics, real, training=False, fake=fake))
        return terms


def make_objective(config: Config, gan):
    """The objective of the config's family."""
    if config.model.family is Family.OASIS:
        return OasisObjective(config, gan)
    return SpadeObjective(config, gan)
