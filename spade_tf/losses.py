"""SPADE's losses (spec §6): GAN (hinge / original / ls / w), feature matching, KL, VGG19.

Every function returns a per-replica *mean* (the KL is a sum, as in the reference). Scaling for
``tf.distribute`` (dividing by the number of replicas) is not done here: the training step
applies it once, in one place, to every term.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from spade_tf.config import GanMode
from spade_tf.layers import at_least_float32
from spade_tf.weights import read_torch_state_dict

log = logging.getLogger(__name__)


def _logits(outputs):
    """The last output (patch logits) of every scale: D returns a list of per-scale lists."""
    return [scale[-1] if isinstance(scale, (list, tuple)) else scale for scale in outputs]


def _one_scale_gan_loss(mode: GanMode, pred, target_is_real: bool, for_discriminator: bool):
    """The GAN loss of one discriminator scale's patch logits (``GANLoss.loss``)."""
    pred = at_least_float32(pred)
    if mode is GanMode.HINGE:
        if for_discriminator:
            return (tf.reduce_mean(tf.nn.relu(1.0 - pred)) if target_is_real
                    else tf.reduce_mean(tf.nn.relu(1.0 + pred)))
        if not target_is_real:  # the reference asserts this too
            raise ValueError("the hinge generator loss is defined for target_is_real=True only")
        return -tf.reduce_mean(pred)
    if mode is GanMode.ORIGINAL:  # BCE with logits against 1 / 0
        target = tf.ones_like(pred) if target_is_real else tf.zeros_like(pred)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=pred))
    if mode is GanMode.LS:
        return tf.reduce_mean(tf.square(pred - (1.0 if target_is_real else 0.0)))
    # 'w': Wasserstein
    return -tf.reduce_mean(pred) if target_is_real else tf.reduce_mean(pred)


def gan_loss(outputs, target_is_real: bool, for_discriminator: bool, mode="hinge"):
    """The reference's ``GANLoss`` on multiscale D outputs: per-scale loss, averaged over scales."""
    mode = GanMode.parse(mode, "gan_mode")
    preds = _logits(outputs)
    return tf.add_n([_one_scale_gan_loss(mode, p, target_is_real, for_discriminator)
                     for p in preds]) / float(len(preds))


def generator_gan_loss(fake_outputs, mode="hinge"):
    """``GAN``: the generator's adversarial term."""
    return gan_loss(fake_outputs, True, for_discriminator=False, mode=mode)


def discriminator_losses(real_outputs, fake_outputs, mode="hinge"):
    """``(D_real, D_Fake)``: the discriminator's two terms (their sum is its loss)."""
    return (gan_loss(real_outputs, True, for_discriminator=True, mode=mode),
            gan_loss(fake_outputs, False, for_discriminator=True, mode=mode))


def feature_matching_loss(fake_outputs, real_outputs, lambda_feat=10.0):
    """``GAN_Feat``: L1 between D's intermediate features of fake and (detached) real.

    Sum over scales and over every output but the last (the logits), each term
    ``mean(|fake - real|) * lambda_feat / num_D``.
    """
    num_d = len(fake_outputs)
    terms = []
    for fake_scale, real_scale in zip(fake_outputs, real_outputs):
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            f = at_least_float32(f)
            r = tf.stop_gradient(at_least_float32(r))
            terms.append(tf.reduce_mean(tf.abs(f - r)))
    if not terms:
        raise ValueError("feature matching needs the discriminator's intermediate features "
                         "(build it with return_features=True)")
    return tf.add_n(terms) * (float(lambda_feat) / num_d)


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), **summed** over batch and dimensions (spec §4).

    The reference's ``KLDLoss``; the ``KLD`` term is this times ``lambda_kld``.
    """
    mu = at_least_float32(mu)
    logvar = at_least_float32(logvar)
    return -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar))


# --------------------------------------------------------------------------- VGG19


# torchvision's vgg19().features indices of the 16 convs, in order.
_TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # relu1_1 ... relu5_1


class VGGLoss:
    """The reference's ``VGGLoss``: weighted L1 between VGG19 features of fake and real.

    Features at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (torchvision ``features`` indices
    1, 6, 11, 20, 29) with weights 1/32, 1/16, 1/8, 1/4, 1; target features detached. Images go
    in as they are, in [-1, 1], **without** ImageNet mean/std normalization, as in the reference.

    Weights come from a local file, never from the network:

    - ``.npz`` (or ``.pth``, needs torch) holding torchvision's ``vgg19`` state dict keys
      ``features.N.weight`` / ``features.N.bias``: the weights the reference uses;
    - ``.weights.h5``: a Keras ``VGG19(include_top=False)`` weights file. Keras' ImageNet VGG19 was
      trained on BGR, mean-subtracted 0..255 input, so its features on [-1, 1] RGB differ from the
      reference's; prefer the torchvision weights for parity.

    Args:
        weights: path of the weights file; ``None`` builds a randomly initialised VGG19 (tests).
        lambda_vgg: the overall factor ``--lambda_vgg`` (the reference's ``VGG`` term includes it).
    """

    def __init__(self, weights: str | Path | None = None, lambda_vgg: float = 10.0):
        self.weights = None if weights is None else str(weights)
        self.lambda_vgg = float(lambda_vgg)
        base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
        if self.weights is not None:
            load_vgg19_weights(base, self.weights)
        outputs = [base.get_layer(n).output for n in VGG_LAYERS]
        self.model = keras.Model(base.input, outputs, name="vgg19_features")
        self.model.trainable = False

    def __call__(self, fake, real):
        both = tf.concat([tf.cast(fake, tf.float32), tf.cast(real, tf.float32)], 0)
        feats = self.model(both, training=False)
        n = tf.shape(fake)[0]
        total = 0.0
        for w, f in zip(VGG_WEIGHTS, feats):
            total += w * tf.reduce_mean(tf.abs(f[:n] - tf.stop_gradient(f[n:])))
        return total * self.lambda_vgg


def load_vgg19_weights(model: keras.Model, path: str) -> None:
    """Loads a local VGG19 weights file into a Keras ``VGG19(include_top=False)`` (see VGGLoss)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"VGG19 weights file not found: {p} (loss.vgg_weights). Convert "
                                f"torchvision's vgg19 state dict to .npz, or set loss.vgg_weights=null")
    if p.name.endswith(".h5"):
        model.load_weights(str(p))
        return
    if p.suffix == ".pth":
        state = read_torch_state_dict(p)
    else:
        with np.load(p) as z:
            state = {k: z[k] for k in z.files}
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()}
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, idx in zip(convs, _TORCHVISION_CONV_INDICES):
        try:
            w, b = state[f"{idx}.weight"], state[f"{idx}.bias"]
        except KeyError as e:
            raise ValueError(f"{p}: missing VGG19 key features.{e.args[0]}; expected torchvision "
                             f"vgg19 keys features.N.weight / features.N.bias") from None
        layer.set_weights([np.transpose(w, (2, 3, 1, 0)), b])


def make_vgg_loss(weights: str | None, lambda_vgg: float):
    """The VGG term for a config: ``None`` (off, and logged) when no weights file is set."""
    if weights is None:
        log.warning("VGG perceptual loss is OFF: no VGG19 weights file given (loss.vgg_weights). "
                    "The reference uses it with lambda_vgg=%s; nothing is downloaded here.", lambda_vgg)
        return None
    if lambda_vgg == 0:
        return None
    return VGGLoss(weights, lambda_vgg)


# --------------------------------------------------------------------------- OASIS
# boschresearch/OASIS models/losses.py and models/models.py (Sushko, Schonfeld et al., ICLR 2021,
# Eq. 2-4). D's logits have N+1 channels: 0 = fake, c + 1 = class c. OASIS' one-hot has its
# dontcare class at channel 0 (spade_tf.semantics.to_semantics of an OASIS config).


def _global_sum(x):
    """``x`` summed over the replicas of a ``tf.distribute`` replica context (itself elsewhere):
    OASIS' class weights and LabelMix are statistics of the whole batch, so 1 replica and N
    replicas must see the same ones (the official code computes them per GPU)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        return ctx.all_reduce("sum", x)
    return x


def oasis_class_weights(semantics, dontcare=True):
    """OASIS' class balancing (``get_class_balancing``) of a batch's one-hot map: ``[C]``.

    Class c weighs ``B·H·W / (n · count_c)``, where count_c is its pixels in the batch and n the
    number of classes present other than dontcare; dontcare (channel 0) weighs 0. A class absent
    from the batch gets ``inf``, as in the reference: no pixel uses it. Recomputed for every
    batch; under ``tf.distribute`` the counts are those of the global batch.

    Args:
        semantics: NHWC one-hot ``[B, H, W, C]`` (extra channels after the one-hot, such as the
            instance edges, must be sliced off first).
        dontcare: channel 0 is dontcare (every OASIS dataset sets ``contain_dontcare_label``).
    """
    onehot = at_least_float32(semantics)
    counts = _global_sum(tf.reduce_sum(onehot, axis=[0, 1, 2]))
    pixels = _global_sum(tf.cast(tf.reduce_prod(tf.shape(onehot)[:3]), counts.dtype))
    if dontcare:
        counts = tf.concat([tf.zeros_like(counts[:1]), counts[1:]], 0)
    present = tf.reduce_sum(tf.cast(counts > 0, counts.dtype))
    weights = pixels / (present * counts)  # inf where count is 0
    if dontcare:
        weights = tf.concat([tf.zeros_like(weights[:1]), weights[1:]], 0)
    return tf.stop_gradient(weights)


def oasis_targets(semantics):
    """The "real" N+1 target of every pixel: its class (the one-hot's argmax) + 1."""
    return tf.argmax(semantics, axis=-1, output_type=tf.int32) + 1


def oasis_weight_map(semantics, class_weights=None):
    """Each pixel's weight in the "real" losses: ``class_weights[argmax]`` (``[B, H, W]``)."""
    if class_weights is None:
        class_weights = oasis_class_weights(semantics)
    return tf.gather(class_weights, tf.argmax(semantics, axis=-1, output_type=tf.int32))


def _cross_entropy(logits, target):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target,
                                                          logits=at_least_float32(logits))


def oasis_real_loss(logits, semantics, weight_map=None):
    """``losses_computer.loss(..., for_real=True)``: the N+1 cross-entropy against each pixel's
    class + 1, weighted by ``weight_map`` (class balancing; None: unweighted, OASIS'
    ``--no_balancing_inloss``), averaged over all pixels. G's adversarial loss on the fake's
    logits, and D's real term on the real image's."""
    ce = _cross_entropy(logits, oasis_targets(semantics))
    if weight_map is not None:
        ce = ce * tf.cast(weight_map, ce.dtype)
    return tf.reduce_mean(ce)


def oasis_fake_loss(logits):
    """``losses_computer.loss(..., for_real=False)``: the plain mean cross-entropy of every pixel
    against channel 0 ("fake")."""
    return tf.reduce_mean(_cross_entropy(logits, tf.zeros(tf.shape(logits)[:3], tf.int32)))


def labelmix_mask(semantics, seed=None, dtype=tf.float32, bits=None):
    """LabelMix's mask ``[B, H, W, 1]``: 1 where the mixed image takes the real image.

    One fair bit per image and per class, so that every class region comes wholly from the real
    or from the fake image. Deviation from OASIS' ``generate_labelmix``: it draws one bit per
    class id for the whole batch, in place, so that once class 0's pixels were set to 1 they
    take class 1's bit as well (its dontcare region follows class 1 whenever class 0 drew 1).
    Bits per image and class avoid both; the term's expectation is unchanged.

    Args:
        semantics: NHWC one-hot ``[B, H, W, C]``.
        seed: a ``keras.random.SeedGenerator`` (or int) for the bits.
        bits: the bits ``[B, C]`` (0/1 int32) when drawn already (the training step draws them
            for the global batch: ``spade_tf.objectives.draw_for_global_batch``).
    """
    onehot = at_least_float32(semantics)
    shape = tf.shape(onehot)
    if bits is None:
        bits = keras.random.randint(tf.stack([shape[0], shape[-1]]), 0, 2, seed=seed,
                                    dtype="int32")
    cls = tf.argmax(onehot, axis=-1, output_type=tf.int32)
    mask = tf.gather(bits, cls, batch_dims=1)
    return tf.cast(mask, dtype)[..., None]


def labelmix_images(mask, real, fake):
    """The mixed image ``mask · real + (1 − mask) · fake``."""
    mask = tf.cast(mask, fake.dtype)
    return mask * tf.cast(real, fake.dtype) + (1.0 - mask) * fake


def labelmix_loss(d_mixed, d_fake, d_real, mask, lambda_labelmix=10.0):
    """``D_labelmix``: lambda · mean((mask · D(real) + (1 − mask) · D(fake) − D(mixed))²) over
    all logits. Not detached, as in OASIS: the gradient flows into all three D outputs."""
    mask = at_least_float32(mask)
    mixed = mask * at_least_float32(d_real) + (1.0 - mask) * at_least_float32(d_fake)
    return float(lambda_labelmix) * tf.reduce_mean(tf.square(mixed - at_least_float32(d_mixed)))


def oasis_losses(d_fake, d_real, d_mixed, semantics, mask, lambda_labelmix=10.0,
                 class_balancing=True):
    """Every OASIS loss term from D's logits of one batch: ``{"G_adv", "D_fake", "D_real",
    "D_labelmix"}`` (G's loss is ``G_adv``; D's is the sum of the other three).

    Args:
        d_fake, d_real, d_mixed: D's logits ``[B, H, W, C + 1]`` for the fake, the real and the
            LabelMix image (``d_mixed`` None: no LabelMix term).
        semantics: NHWC one-hot ``[B, H, W, C(+...)]``; channels past the logits' C are dropped.
        mask: LabelMix's mask ``[B, H, W, 1]``.
        lambda_labelmix: ``--lambda_labelmix``.
        class_balancing: not ``--no_balancing_inloss``.
    """
    c = int(d_fake.shape[-1]) - 1
    onehot = semantics[..., :c]
    weight_map = oasis_weight_map(onehot) if class_balancing else None
    out = {"G_adv": oasis_real_loss(d_fake, onehot, weight_map),
           "D_fake": oasis_fake_loss(d_fake),
           "D_real": oasis_real_loss(d_real, onehot, weight_map)}
    if d_mixed is not None:
        out["D_labelmix"] = labelmix_loss(d_mixed, d_fake, d_real, mask, lambda_labelmix)
    return out
